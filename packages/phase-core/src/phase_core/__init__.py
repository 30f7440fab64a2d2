"""Phase protocol library: identity, canonical JSON, signed documents, content store.

The pure modules (canonical, envelope, manifest, receipt, boot, records) import no
asyncio or socket, read no environment or clock, and open no files.
"""

__version__ = "0.1.0"
