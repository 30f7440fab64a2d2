"""Thin asyncio adapters over the sans-I/O state machines in ``phase_core.protocol``.

``aio.quic`` is the QUIC/Noise transport (the only module importing aioquic);
``aio.certs`` makes the ephemeral self-signed TLS certificates it presents.
Both need the ``phase-core[net]`` extra.
"""
