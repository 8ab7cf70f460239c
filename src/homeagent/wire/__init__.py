"""Wire formats: bytes in, frozen values out, and back. No I/O, no clock."""

from homeagent.wire.errors import ParseError

__all__ = ["ParseError"]
