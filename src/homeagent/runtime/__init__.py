"""The asyncio shell around the core: sockets, the clock, timers and the control socket."""
