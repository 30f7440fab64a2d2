"""Fetch blobs by content id from the cache, local directories and HTTP(S) mirrors.

Every blob is hashed while it streams, and enters the content store only if
its bytes hash to its id. `get` fetches one blob. Without a command,
phase-fetch is a pipeline stage: it reads JSON-line records on stdin (verified
boot or job manifests from phase-verify, bare signed manifests, or plain
{"v":1,"type":"fetch","id":...,"size_bytes":...,"mirrors":[...]} requests),
re-verifies signed documents with the keyring, fetches every blob they name,
and writes one "blob" record per blob, then the input record (a record with
"paths" added; a bare envelope unchanged, as signed). Sources in order: the store, --from-dir, --mirror, the record's
"sources" (phase-verify carries the provider phase-discover found), the
manifest's signed mirrors. "error" records from an earlier stage are passed
on and count in the exit status; other record types are dropped
(docs/pipeline.md). `cas` looks after the content store.

Usage:
  phase-fetch [options] [-v...] [--mirror=<url>]... [--from-dir=<dir>]...
  phase-fetch get <content-id> [options] [-v...] [--mirror=<url>]... [--from-dir=<dir>]...
  phase-fetch cas size [options] [-v...]
  phase-fetch cas list [options] [-v...]
  phase-fetch cas verify [<id>...] [options] [-v...]
  phase-fetch cas gc <max-bytes> [options] [-v...]
  phase-fetch (-h | --help)
  phase-fetch --version

Options:
  -h, --help             Show this help.
  --version              Show the version.
  --mirror=<url>         An HTTP(S) mirror, tried before the record's sources
                         and mirrors, in the order given. A base URL (the blob is at
                         <url>/sha256/<hex>) or a template with {hex}, {id} or
                         {name}.
  --from-dir=<dir>       A local directory to look in before any mirror
                         (<dir>/sha256/<hex>, <dir>/<hex>, <dir>/<name>, or a
                         content store).
  --size=<bytes>         The blob's size in bytes, checked before the body.
  --out=<path>           Also place the fetched blob at <path>, atomically.
  --out-dir=<dir>        Pipeline: also place each blob at <dir>/<name>
                         (the directory is created if missing).
  --home=<dir>           Phase home (default: $PHASE_HOME, then
                         ~/.local/share/phase).
  --cas=<dir>            The content store (default: <home>/cas).
  --keys=<path>          Keyring for re-verifying signed documents
                         (default: <home>/keyring.toml).
  --now=<time>           Verify documents as of this RFC 3339 UTC time.
  -j, --jobs=<n>         Blobs fetched at once [default: 4].
  --connect-timeout=<s>  Seconds to connect to a mirror, TLS handshake
                         included [default: 10].
  --read-timeout=<s>     Seconds a mirror may stall mid-response, and the most
                         its status line and headers may take [default: 30].
  --min-rate=<bytes>     Bytes per second a body must bring, averaged over each
                         read-timeout window; slower is a timeout (0: no floor)
                         [default: 1024].
  --source-timeout=<s>   Seconds one mirror gets for a blob, retries included;
                         then the next source [default: 3600].
  --retries=<n>          Retries per mirror on transient failures [default: 3].
  --backoff=<s>          First retry delay; doubles, with jitter [default: 0.5].
  --max-redirects=<n>    Redirects followed per request [default: 5].
  --proxy=<url>          Send every HTTP(S) request through this SOCKS5 proxy,
                         socks5h://[user:pass@]IP:PORT (e.g. tor's
                         socks5h://127.0.0.1:9050): mirror host names are
                         resolved by the proxy, never here (default:
                         $PHASE_PROXY; none).
  --max-bytes=<n>        Cap on a blob whose size is not known
                         (default: 16 GiB).
  --no-resume            Neither keep nor use partial downloads.
  -q, --quiet            Print nothing on stdout; the exit status answers.
  -v, --verbose          More log lines on stderr (-vv for debug).
  --log-format=FMT       json, text or auto (text on a terminal); also PHASE_LOG_FORMAT.

Exit status:
  0   every blob fetched and verified.
  1   a source served wrong bytes and no source served the right ones
      (digest mismatch), or a signed document failed verification.
  64  usage error.
  65  malformed input (a bad content id, name, URL or record).
  66  missing input (no keyring, no such --from-dir, nothing to fetch in the
      input: an empty stdin included).
  69  unavailable: no source had the blob.
  70  internal error (a bug).
  74  I/O error: the store or --out cannot be written (read-only, full,
      permission denied, or --out names a directory).
  75  timed out or failed transiently; a retry may help (partial downloads
      are kept and resumed); also: the proxy cannot be reached.
  76  the proxy broke the SOCKS5 protocol (a wrong version, a reply too long).
  78  the proxy refused the user name and password, or a bad PHASE_PROXY.
  130 interrupted.
"""

from __future__ import annotations

from typing import Any

from phase_core.cli.runner import entry as _entry
from phase_core.cli.runner import run_cli
from phase_fetch import __version__

TOOL = "phase-fetch"
DOC = __doc__ or ""


def main(args: dict[str, Any]) -> int:
    from phase_fetch import run

    return run.main(args)


def cli(argv: list[str] | None = None) -> int:
    """Run the tool in-process (tests, plasmd); returns the exit status."""
    return run_cli(TOOL, DOC, __version__, main, argv)


def entry() -> None:
    _entry(TOOL, DOC, __version__, main)
