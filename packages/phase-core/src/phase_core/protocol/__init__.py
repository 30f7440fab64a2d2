"""Sans-I/O protocol state machines: bytes in, events and bytes out.

Nothing in this package imports asyncio or socket, reads a clock or the
environment, or opens a file. The asyncio adapters live in ``phase_core.aio``.
"""
