"""The pure, synchronous per-bar pipeline: no I/O, no asyncio, no config file (see docs/architecture.md)."""
