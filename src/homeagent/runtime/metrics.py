"""The Prometheus endpoint (``[metrics] listen``): the core's counters as metrics, read when scraped.

The hot path pays nothing for it: the core already counts everything (``HomeAgent.counters``, what
``homeagent status`` shows), the data plane reports its own counters (``Dataplane.counters``), and this
collector turns both into metric families only when a scrape asks, on the event loop
(``runtime/exposition.py``), so it reads the core as of one moment. docs/operations.md ("Metrics") lists
every metric with the MIB objects it answers to (RFC 2006 MIP-MIB, Cisco's CISCO-MOBILE-IP-MIB).

The counters are the core's: ``homeagent status --reset-counters`` sets them back to 0, which Prometheus
reads as a counter reset (``rate()`` and ``increase()`` allow for it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from homeagent import __version__
from homeagent.config import MetricsConfig
from homeagent.core.election import TRANSITIONS, Event
from homeagent.core.group import REASONS
from homeagent.core.home_agent import HomeAgent
from homeagent.dataplane.ebpf import REASONS as PROGRAM_REASONS
from homeagent.runtime.exposition import Server
from homeagent.runtime.forwarding import Forwarding
from homeagent.wire.ip import Drop
from homeagent.wire.registration import ReplyCode

DATAPLANE_TIMEOUT = 1.0  # seconds a scrape waits for a forwarder's fresh counters before taking the last
ROLES = ("init", "standby", "active", "peer")
# The denial codes the registrar sends (docs/registration.md): their series exist from the start, at 0.
DENIALS = (129, 131, 133, 134, 135, 136, 139)
DISCARDS = ("malformed", "no_security_association", "no_authentication", "foreign_home_authentication",
            "not_serving")
# The role each election event leads to (a stop always leads to init).
TARGETS = {event: role.label for state in TRANSITIONS.values() for event, role in state.items()}


class MetricsError(RuntimeError):
    """The endpoint could not be opened: the one line the daemon stops its start with."""


class Collector:
    """Reads the core (and the last data plane snapshot) into metric families, at each scrape."""

    def __init__(self, core: HomeAgent) -> None:
        self.core = core
        self.dataplane: dict[str, object] = {}  # set before each scrape (``Endpoint.render``)

    def collect(self) -> Iterator[Metric]:
        core = self.core
        c = core.counters.get
        yield _gauge("homeagent_build_info", "the running version (the value is always 1)", 1, version=__version__)
        yield _gauge("homeagent_start_time_seconds", "when the daemon started, Unix time", core.clock(core.started))
        yield from self._registrations(c)
        yield _gauge("homeagent_bindings", "mobility bindings held (one tunnel each)", len(core.bindings))
        yield _counter("homeagent_bindings_expired", "bindings removed because their lifetime ended", c("expired", 0))
        yield _counter("homeagent_bindings_removed", "bindings removed by homeagent remove", c("removed", 0))
        yield _counter("homeagent_send_failures", "datagrams the kernel would not send", c("send_failed", 0))
        violations = CounterMetricFamily("homeagent_security_violations", "authentication failures and replays, "
                                         "of registrations and of members' messages", labels=["kind"])
        violations.add_metric(["registration"], c("security_violations", 0))
        violations.add_metric(["redundancy"], c("redundancy.security_violations", 0))
        yield violations
        yield from self._role(c)
        if core.group is not None:
            yield from self._replication(c)
        yield from self._dataplane()

    def _registrations(self, c: Any) -> Iterator[Metric]:
        yield _counter("homeagent_registration_requests", "datagrams received on the registration port",
                       c("requests", 0))
        accept = 1 if self.core.config.home_agent.simultaneous_bindings == 0 else 0  # the code accepted with
        replies = CounterMetricFamily("homeagent_registration_replies", "Registration Replies by reply code",
                                      labels=["code"])
        replies.add_metric([str(accept)], c("accepted", 0) + c("accepted.deregistration", 0) + c("accepted.duplicate", 0))
        codes = set(DENIALS) | {int(k[7:]) for k in self.core.counters if k.startswith("denied.") and k[7:].isdigit()}
        for code in sorted(codes):
            replies.add_metric([str(code)], c(f"denied.{code}", 0))
        yield replies
        accepted = CounterMetricFamily("homeagent_registrations_accepted", "requests accepted, by kind: a registration "
                                       "(new or renewed), a de-registration, a retransmission answered again",
                                       labels=["kind"])
        for kind, key in (("registration", "accepted"), ("deregistration", "accepted.deregistration"),
                          ("retransmission", "accepted.duplicate")):
            accepted.add_metric([kind], c(key, 0))
        yield accepted
        discarded = CounterMetricFamily("homeagent_registration_requests_discarded", "requests discarded without a "
                                        "reply, by reason", labels=["reason"])
        for reason in DISCARDS:
            discarded.add_metric([reason], c(f"discarded.{reason}", 0))
        yield discarded

    def _role(self, c: Any) -> Iterator[Metric]:
        role = self.core.role
        gauge = GaugeMetricFamily("homeagent_role", "this member's role: 1 for the one it has", labels=["role"])
        for name in ROLES:
            gauge.add_metric([name], 1 if name == role else 0)
        yield gauge
        changes = CounterMetricFamily("homeagent_role_changes", "role changes, by the role taken and the reason",
                                      labels=["to", "reason"])
        if self.core.group is not None:
            for event in Event:
                reason = REASONS[event.value]
                changes.add_metric([TARGETS.get(event, "init"), reason], c(f"redundancy.role_changes.{reason}", 0))
        yield changes

    def _replication(self, c: Any) -> Iterator[Metric]:
        group = self.core.group
        assert group is not None
        peers = GaugeMetricFamily("homeagent_redundancy_peer_up", "1 while a configured member is heard",
                                  labels=["peer"])
        for m in group.membership:
            peers.add_metric([m.name], 1 if m.up else 0)
        yield peers
        r = "redundancy."
        for name, key, text in (
            ("members_marked_down", "members_marked_down", "members given up on (silent, or not acking)"),
            ("binding_updates_sent", "updates_sent", "Binding Updates sent, first sends (cmiHaRedunSentBUs)"),
            ("binding_updates_retransmitted", "updates_retransmitted", "Binding Updates sent again for want of an ack"),
            ("binding_updates_acked", "updates_acked", "Binding Update Acks received (cmiHaRedunReceivedBUAcks)"),
            ("binding_updates_failed", "updates_failed", "Binding Updates given up on after every resend"),
            ("binding_updates_received", "updates_received", "Binding Updates received (each is acked)"),
            ("sync_timeouts", "sync_timeouts", "sync replies sent without every ack"),
            ("table_replies_retransmitted", "table_replies_retransmitted", "Binding Table Replies sent again"),
            ("table_replies_dropped", "table_replies_dropped", "Binding Table Replies answering nothing we asked"),
            ("table_reply_bytes_sent", "table_reply_bytes_sent", "bytes of Binding Table Replies sent"),
            ("table_transfers_abandoned", "table_transfers_abandoned", "table downloads that stalled"),
        ):
            yield _counter(f"homeagent_redundancy_{name}", text, c(r + key, 0))
        for name, text in (("table_requests", "Binding Table Requests"), ("table_replies", "Binding Table Replies"),
                           ("table_transfers", "whole table transfers completed (downloads and uploads)")):
            family = CounterMetricFamily(f"homeagent_redundancy_{name}", f"{text}, sent and received",
                                         labels=["direction"])
            for direction in ("sent", "received"):
                family.add_metric([direction], c(f"{r}{name}_{direction}", 0))
            yield family
        lag = group.replication.lag
        yield HistogramMetricFamily(
            "homeagent_redundancy_replication_lag_seconds",
            "from a Binding Update's first send to its member's ack, resends included",
            buckets=[(_le(bound), n) for bound, n in lag.cumulative()], sum_value=lag.sum,
        )

    def _dataplane(self) -> Iterator[Metric]:
        dp = self.dataplane
        yield _gauge("homeagent_tunnels", "mobile nodes the data plane tunnels to (home addresses with tunnels)",
                     _int(dp.get("dataplane.home_addresses")))
        packets = CounterMetricFamily("homeagent_dataplane_packets", "packets tunnelled: forward to a mobile node, "
                                      "reverse from one (RFC 3024)", labels=["direction"])
        octets = CounterMetricFamily("homeagent_dataplane_bytes", "bytes of the inner packets tunnelled",
                                     labels=["direction"])
        for direction, prefix in (("forward", ""), ("reverse", "reverse_")):
            packets.add_metric([direction], _int(dp.get(f"dataplane.{prefix}packets")))
            octets.add_metric([direction], _int(dp.get(f"dataplane.{prefix}bytes")))
        yield packets
        yield octets
        drops = CounterMetricFamily("homeagent_dataplane_drops", "packets the data plane dropped, by reason",
                                    labels=["reason"])
        counted = dp.get("dataplane.drops")
        counted = counted if isinstance(counted, dict) else {}
        for reason in sorted({d.value for d in Drop} | set(counted)):
            drops.add_metric([str(reason)], _int(counted.get(reason)))
        yield drops
        fast = dp.get("dataplane.fast")
        if isinstance(fast, dict):  # the ebpf backend: its program's counters, and the map writes refused
            program = CounterMetricFamily(
                "homeagent_dataplane_program_packets", "what the ebpf program did with the packets it took: "
                "tunnelled, handed to the slow path (pass_*) or dropped, by reason", labels=["reason"])
            for reason in PROGRAM_REASONS:
                program.add_metric([reason], _int(fast.get(reason)))
            yield program
            yield CounterMetricFamily(
                "homeagent_dataplane_map_refused", "map writes the kernel refused (a full map) or that failed: "
                "the home addresses concerned take the slow path", value=_int(fast.get("map_refused")))


class Endpoint:
    """The collector served at ``listen``; ``render`` refreshes the data plane's counters first."""

    def __init__(self, config: MetricsConfig, core: HomeAgent, forwarding: Forwarding) -> None:
        assert config.listen is not None
        self.address, self.port = config.listen
        self.forwarding = forwarding
        self.collector = Collector(core)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, resident memory, open fds...
        self.server = Server(str(self.address), self.port, self.render)

    async def open(self) -> None:
        try:
            await self.server.open()
        except OSError as exc:
            where = f"[{self.address}]" if self.address.version == 6 else str(self.address)
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio rewords it; the errno is the point
            raise MetricsError(f"metrics.listen: cannot listen on {where}:{self.port}: {why}") from None

    async def close(self) -> None:
        await self.server.close()

    async def render(self, accept: str) -> tuple[bytes, str]:
        self.collector.dataplane = await dataplane_counters(self.forwarding)
        return _encode(self.registry, accept)


def _encode(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition the client's Accept header asks for, or the text format where it asks for nothing
    prometheus-client can read (a version that is no number) or would echo a line break into the answer's
    Content-Type: nothing a client sends can do more than get the default (exposition.py)."""
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):
        encoder, content_type = choose_encoder("")
    if not content_type.isprintable():
        encoder, content_type = choose_encoder("")
    return encoder(registry), content_type


async def dataplane_counters(forwarding: Forwarding) -> dict[str, object]:
    """The data plane's counters, fresh from a forwarder process where there is one (without the per-tunnel
    list, which costs the forwarder time per tunnel), else the last it sent."""
    dataplane = forwarding.dataplane
    fetch = getattr(dataplane, "fetch_counters", None)
    if fetch is not None:
        try:
            counters: dict[str, object] = await fetch(timeout=DATAPLANE_TIMEOUT, tunnels=False)
            return counters
        except TimeoutError:
            pass
    return dataplane.counters()


async def serve(config: MetricsConfig, core: HomeAgent, forwarding: Forwarding) -> Endpoint | None:
    """The endpoint, listening, or None when ``[metrics]`` does not ask for one. MetricsError if it cannot."""
    if config.listen is None:
        return None
    endpoint = Endpoint(config, core, forwarding)
    await endpoint.open()
    return endpoint


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    if not labels:
        return GaugeMetricFamily(name, documentation, value=value)
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


__all__ = ["Collector", "Endpoint", "MetricsError", "serve"]
