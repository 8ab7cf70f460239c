"""The sans-I/O core: plain objects that take bytes, addresses and ``now`` and return effects."""
