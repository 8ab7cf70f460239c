"""The one exception every parser raises.

A parser cannot always decide alone what the Home Agent answers, so the error carries the reply code the
RFC asks for (``code``), or ``None`` where the message must be silently discarded (RFC 5944 section 1.9).
"""


class ParseError(ValueError):
    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
