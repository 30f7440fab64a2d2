"""One error tree for the whole project.

Every error carries a stable ``slug`` (used in logs, error records and test
vector names) and an exit code (docs/conventions.md). Errors are split by who is at fault:
the user's input (``InputError``), a document that fails verification
(``Rejected``), the network or a source (``Unavailable``, ``TempFailure``), a
peer breaking the protocol (``ProtocolViolation``), configuration
(``ConfigError``) and our own bugs (``InternalError``).
"""

from __future__ import annotations

from phase_core import exitcodes

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any


class PhaseError(Exception):
    """Base of every error the project raises on purpose."""

    slug = "error"
    exit_code = exitcodes.SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None, slug: str | None = None,
                 **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if slug is not None:
            self.slug = slug
        self.details = details

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_record(self) -> dict[str, Any]:
        """A JSON-able description, used for ``error`` records and log events."""
        rec: dict[str, Any] = {"error": self.slug, "message": self.message,
                               "exit_code": self.exit_code}
        if self.hint:
            rec["hint"] = self.hint
        for k, v in self.details.items():
            rec[k] = v
        return rec


# -- the user's input ---------------------------------------------------------

class UsageError(PhaseError):
    slug = "usage"
    exit_code = exitcodes.USAGE


class InputError(PhaseError):
    """Input that cannot be understood (exit 65)."""

    slug = "bad_input"
    exit_code = exitcodes.DATAERR


class Malformed(InputError):
    slug = "malformed"


class TooLarge(InputError):
    slug = "too_large"


class BadContentId(InputError):
    slug = "bad_content_id"


class MissingInput(PhaseError):
    slug = "missing_input"
    exit_code = exitcodes.NOINPUT


class ConfigError(PhaseError):
    slug = "bad_config"
    exit_code = exitcodes.CONFIG


# -- verification: the document is not acceptable (exit 1) ------------------

class Rejected(PhaseError):
    slug = "rejected"
    exit_code = exitcodes.REJECTED


class BadSignature(Rejected):
    slug = "bad_signature"


class UntrustedSigner(Rejected):
    slug = "untrusted_signer"


class ThresholdNotMet(Rejected):
    slug = "threshold"


class Expired(Rejected):
    slug = "expired"


class NotYetValid(Rejected):
    slug = "not_yet_valid"


class Rollback(Rejected):
    slug = "rollback"


class WrongType(Rejected):
    slug = "wrong_type"


class DigestMismatch(Rejected):
    slug = "digest_mismatch"


class Replay(Rejected):
    slug = "replay"


class JobFailed(Rejected):
    slug = "job_failed"


# -- the world ---------------------------------------------------------------

class Unavailable(PhaseError):
    slug = "unavailable"
    exit_code = exitcodes.UNAVAILABLE


class TempFailure(PhaseError):
    slug = "temporary_failure"
    exit_code = exitcodes.TEMPFAIL


class Timeout(TempFailure):
    slug = "timeout"


class IOFailure(PhaseError):
    slug = "io_error"
    exit_code = exitcodes.IOERR


class Interrupted(PhaseError):
    """The work was stopped on request (a signal, or a caller's cancel): exit 130."""

    slug = "interrupted"
    exit_code = exitcodes.INTERRUPTED


class ProtocolViolation(PhaseError):
    slug = "protocol_violation"
    exit_code = exitcodes.PROTOCOL


class InternalError(PhaseError):
    slug = "internal"
    exit_code = exitcodes.SOFTWARE
