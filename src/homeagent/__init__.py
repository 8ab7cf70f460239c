"""homeagent: a Mobile IPv4 Home Agent (RFC 5944) with Home Agent redundancy (US 7,227,863)."""

__version__ = "0.1.0"
