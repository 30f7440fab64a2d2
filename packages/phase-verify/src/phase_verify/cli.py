"""Verify Phase signed documents: job manifests, receipts, node records, boot manifests.

Reads each FILE as one signed document (or as JSON lines of them); with no
FILE, or FILE "-", reads JSON lines from stdin. Files and stdin follow the same
rules (docs/pipeline.md): a record may be a bare envelope or a record of any
type that carries one under "envelope" (such as another tool's output);
"error" records from an earlier stage are passed on unchanged and count in the
exit status; records of other types are dropped. For every document that
verifies, writes one "verified" record to stdout: its type, id, signer names,
body and envelope, and "sources": the carrying record's "sources" and
"provider_url" (unsigned hints for phase-fetch). A rejection writes an "error"
record, so the last stage of a pipeline fails too.

Verification is offline: signatures, trusted signers holding the role the
document type needs (job-submitter, worker, boot-signer; node records are
self-signed), the threshold of distinct signers, the validity window, and for
boot manifests the rollback high-water mark in --state (raised only after a
manifest fully verifies).

Usage:
  phase-verify [options] [<file>...]
  phase-verify (-h | --help)
  phase-verify --version

Options:
  -k FILE, --keys=FILE     Keyring of trusted keys (TOML). Without it only
                           self-signed node records can verify.
  --role=ROLE              Require this signer role instead of the type's default.
  --threshold=N            Distinct trusted signers required (default: the
                           keyring's [thresholds] for the role, else 1).
  --type=TYPE              Accept only documents of this type.
  --state=FILE             Rollback state file: boot manifests older than the
                           newest accepted for their (channel, arch) are
                           rejected; the mark is raised after success.
  --now=TIME               Verify as of this RFC 3339 time (e.g.
                           2026-11-27T03:26:44Z) instead of the clock.
  --reexec                 For receipts: also re-run the job with plasm-exec
                           and compare outputs and fuel (needs plasm-exec,
                           the job manifest and the inputs in the store).
  --manifest=FILE          The job manifest of the receipt, for --reexec
                           (default: R.manifest.json beside a receipt R.json).
  --home=DIR               Phase home, for the store --reexec reads
                           (default: $PHASE_HOME).
  --keep-going             After a rejection (its "error" record written) go
                           on; exit with the worst status seen.
  --max-bytes=N            Largest document accepted, in bytes [default: 1048576].
  -q, --quiet              Write nothing to stdout; the exit status answers.
  -v, --verbose            More log lines on stderr.
  -h, --help               Show this help.
  --version                Show the version.

Exit status:
  0   every document verified
  1   a document was rejected: bad_signature, untrusted_signer, threshold,
      expired, not_yet_valid, rollback, wrong_type, digest_mismatch, replay,
      reexec_mismatch (--reexec: the re-run differs; the log names the field)
  64  usage error
  65  malformed input: invalid JSON, duplicate keys, floats, bad fields,
      too_large
  66  a FILE or the keyring does not exist, or the input holds no signed
      document (an empty stdin included)
  70  internal error (a bug)
  74  I/O error (for example, the state file cannot be written)
  78  bad keyring or state file
  130 interrupted
  141 broken pipe (the reader of stdout went away)

Errors are logged as JSON lines on stderr with their slug ("error" field).

Examples:
  phase-verify --keys keyring.toml manifest.json
  phase-discover boot --channel=stable --arch=x86_64 \\
      | phase-verify --keys /etc/phase/keyring.toml --state /var/lib/phase/state.json \\
      | phase-fetch --keys /etc/phase/keyring.toml --out-dir=/run/boot
"""

from __future__ import annotations

from typing import Any

from phase_core.cli.runner import entry as _entry
from phase_verify import __version__


def main(args: dict[str, Any]) -> int:
    from phase_verify.run import run

    return run(args)


def entry() -> None:
    _entry("phase-verify", __doc__ or "", __version__, main)
