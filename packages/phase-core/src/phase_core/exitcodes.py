"""Exit codes shared by every Phase tool (sysexits plus one "no")."""

from __future__ import annotations

OK = 0
REJECTED = 1  # bad signature, rollback, digest mismatch, job failed
USAGE = 64
DATAERR = 65  # bad input
NOINPUT = 66  # missing input
UNAVAILABLE = 69
SOFTWARE = 70  # internal error
IOERR = 74
TEMPFAIL = 75  # temporary failure, retry may help
PROTOCOL = 76  # the peer broke the protocol
CONFIG = 78
INTERRUPTED = 130
BROKEN_PIPE = 141

DESCRIPTIONS: dict[int, str] = {
    OK: "ok",
    REJECTED: "rejected (bad signature, untrusted signer, rollback, digest mismatch, job failed)",
    USAGE: "usage error",
    DATAERR: "bad input (malformed or oversized document)",
    NOINPUT: "missing input (a file or blob that does not exist)",
    UNAVAILABLE: "unavailable (no source or peer could serve the request)",
    SOFTWARE: "internal error (a bug; the log has the traceback)",
    IOERR: "I/O error",
    TEMPFAIL: "temporary failure (timed out; a retry may help)",
    PROTOCOL: "the peer broke the protocol",
    CONFIG: "bad configuration",
    INTERRUPTED: "interrupted",
    BROKEN_PIPE: "broken pipe",
}


def worst(a: int, b: int) -> int:
    """The more severe of two exit statuses (used by --keep-going).

    0 is best; any failure beats 0. Among failures, an internal error beats
    everything, then the numerically larger code.
    """
    if a == OK:
        return b
    if b == OK:
        return a
    if SOFTWARE in (a, b):
        return SOFTWARE
    return max(a, b)
