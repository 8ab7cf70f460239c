"""The vector file format both vector suites share: ``@key value`` lines, then ``field  hex  # comment``."""

from __future__ import annotations

from pathlib import Path


def read(path: Path) -> tuple[dict[str, str], list[tuple[str, bytes, str]]]:
    """(meta, fields): the ``@`` lines as a dict, and each field as (name, bytes, comment), in order."""
    meta: dict[str, str] = {}
    fields: list[tuple[str, bytes, str]] = []
    for raw in path.read_text().splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        if line.startswith("@"):
            key, value = line[1:].split(None, 1)
            meta[key] = value
        else:
            key, value = line.split()
            fields.append((key, bytes.fromhex(value), comment.strip()))
    return meta, fields
