"""core/persisted.py, the store's record parser, under arbitrary input: CorruptRecord is the only exception
that may escape, a chunk splits into records that cover it exactly, and what the encoder writes of any table
reads back as the same states."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.core.bindings import BindingTable
from homeagent.core.persisted import CorruptRecord, encode, records, state

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = 5000.0  # monotonic
OFFSET = 1.7e9  # wall minus monotonic


def head(home: int, bindings: int, tombstones: int) -> bytes:
    return home.to_bytes(4, "big") + (1 << 63).to_bytes(8, "big") * 2 + bytes((bindings, tombstones))


NEAR_VALID = st.builds(
    lambda home, b, t, body, tail: head(home, b, t) + body + tail,
    st.integers(0, 0xFFFFFFFF), st.integers(0, 12), st.integers(0, 12),
    st.binary(max_size=27 * 12 + 20 * 12), st.binary(max_size=30),
)


@FAST
@given(st.one_of(st.binary(max_size=400), NEAR_VALID, st.lists(NEAR_VALID, max_size=4).map(b"".join)))
def test_any_bytes_parse_or_raise_corrupt_record(chunk):
    try:
        parsed = list(records(chunk))
        states = [state(record, OFFSET) for _, record in parsed]
    except CorruptRecord:
        return
    assert b"".join(record for _, record in parsed) == chunk
    for (home, record), s in zip(parsed, states):
        assert record[:4] == home.to_bytes(4, "big")
        assert s.last >= max((b.identification for b in s.bindings), default=0)


OPERATION = st.one_of(
    st.tuples(st.just("register"), st.integers(1, 6), st.integers(1, 4), st.integers(1, 0xFFFF),
              st.booleans(), st.integers(0, 255)),
    st.tuples(st.just("deregister"), st.integers(1, 6), st.one_of(st.none(), st.integers(1, 4))),
    st.tuples(st.just("tick"), st.floats(0.5, 100)),
)


@MEDIUM
@given(st.lists(OPERATION, max_size=40))
def test_what_the_encoder_writes_of_a_table_reads_back_as_its_states(operations):
    table, now, ident = BindingTable(), NOW, 1 << 50
    for op in operations:
        ident += 1
        if op[0] == "register":
            _, home, coa, lifetime, simultaneous, flags = op
            table.register(home, coa, lifetime, ident, now, flags, simultaneous, home_agent=7)
        elif op[0] == "deregister":
            table.deregister(op[1], op[2], ident, now)
        else:
            now += op[1]
            table.expire(now)
    chunk = encode(table, table.home_addresses(), OFFSET)
    parsed = dict(records(chunk))
    assert sorted(parsed) == sorted(table.home_addresses())
    for home, record in parsed.items():
        held, read = table.state(home), state(record, OFFSET)
        assert held is not None
        assert (read.last, read.cleared) == (held.last, held.cleared)
        assert [b._replace(expires=0.0) for b in read.bindings] == \
               [b._replace(expires=0.0) for b in held.bindings]
        assert all(abs(r.expires - b.expires) < 1e-6 for r, b in zip(read.bindings, held.bindings))
        assert [t._replace(forget_at=0.0) for t in read.tombstones] == \
               [t._replace(forget_at=0.0) for t in held.tombstones]
        assert all(abs(r.forget_at - t.forget_at) < 1e-6 for r, t in zip(read.tombstones, held.tombstones))
