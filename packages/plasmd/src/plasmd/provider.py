"""The HTTP boot provider: signed boot manifests and their artifacts, by content id.

URL layout (shared with phase-discover's HTTP provider support and phase-fetch's
mirrors)::

    GET /<channel>/<arch>/manifest.json   the signed boot_manifest envelope
    GET /sha256/<64 hex>                  a blob from the content store; Range
                                          (one range), X-Content-Id: sha256:<hex>

Only the artifacts the served manifests name are served (``Manifests.artifacts``):
any other blob in the store, such as another job's private stdin when the store is
a node's, is 404 exactly like a blob that is not there. Anything else is 404;
methods other than GET and HEAD are 405. Paths are matched
whole against strict patterns and never joined onto a filesystem path: a blob is
found by ``ContentStore.path_for(<id>)`` from a validated id, a manifest by a
(channel, arch) key the provider loaded itself. Nothing here is trusted by clients:
they verify the envelope and hash the bytes. The provider re-hashes each blob once
(then whenever its size or mtime changes) so it does not serve a corrupt store.

Connections are capped and time out (boundedhttp.py): idle sockets cannot pile
up threads.

``sign_boot_manifest`` makes a manifest from a kernel, an initramfs and a cmdline,
putting both files into the store and bumping the version past the one recorded in
a state file (never reusing or lowering it).

Run as ``python -m plasmd.provider`` until plasmd's CLI wires these in.

Usage:
  plasmd-provider serve --cas=DIR --manifests=DIR [--host=H] [--port=N] [-v...]
  plasmd-provider sign --kernel=F --initramfs=F --key=FILE... [--cmdline=S]
      [--channel=C] [--arch=A] [--mirror=URL]... [--state=FILE] [--cas=DIR]
      [--manifests=DIR] [--lifetime=S] [--version=N] [--now=T] [-v...]
  plasmd-provider (-h | --help)

Options:
  --cas=DIR          Content store holding the artifacts.
  --manifests=DIR    Directory of <channel>/<arch>/manifest.json files (a changed
                     file is served from the next request on; no restart).
  --host=H           Address to bind [default: 127.0.0.1].
  --port=N           Port; 0 picks a free one [default: 0].
  --kernel=F         Kernel image to boot.
  --initramfs=F      Initramfs to boot.
  --cmdline=S        Kernel command line of the booted system [default: ].
  --channel=C        Boot channel [default: stable].
  --arch=A           x86_64, aarch64 or riscv64 [default: x86_64].
  --key=FILE         A boot-signer key (repeat for k-of-n thresholds).
  --mirror=URL       A mirror base URL the manifest names (repeatable).
  --state=FILE       Version state file (default: versions.json in --manifests).
  --lifetime=S       Seconds the manifest stays valid [default: 2592000].
  --version=N        Use this version (must be above the recorded one).
  --now=T            Creation time (RFC 3339) instead of the clock.
  -v, --verbose      More log lines on stderr.
  -h, --help         Show this help.

Exit status:
  0 ok (serve: runs until interrupted; prints one "provider" record with its URL);
  64 usage; 65 bad input; 66 missing file or key; 74 I/O error; 78 bad key file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from phase_core import boot, envelope, identity, log, timefmt
from phase_core.canonical import canonical, parse
from phase_core.cas import ContentStore, verdict_fresh
from phase_core.errors import IOFailure, Malformed, MissingInput, PhaseError, UsageError
from phase_core.fsutil import locked, write_atomic
from plasmd.boundedhttp import MAX_CONNECTIONS, BoundedHandler, BoundedHTTPServer

BLOB_RE = re.compile(r"/sha256/([0-9a-f]{64})")
MANIFEST_RE = re.compile(r"/([a-z0-9][a-z0-9._-]{0,31})/(x86_64|aarch64|riscv64)/manifest\.json")
RANGE_RE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")  # ASCII, at most 19 digits
ARCHES = ("x86_64", "aarch64", "riscv64")
MAX_MANIFEST_BYTES = 1 << 20
CHUNK = 1 << 20

Key = tuple[str, str]


# -- manifests -----------------------------------------------------------------
def _check_slot(key: Key, data: bytes) -> bytes:
    """Structurally check an envelope for (channel, arch); return its bytes as served."""
    channel, arch = key
    if not MANIFEST_RE.fullmatch(f"/{channel}/{arch}/manifest.json"):
        raise Malformed(f"bad channel/arch {channel[:40]!r}/{arch[:20]!r}")
    if len(data) > MAX_MANIFEST_BYTES:
        raise Malformed(f"manifest for {channel}/{arch} is over {MAX_MANIFEST_BYTES} bytes")
    env = envelope.parse(parse(data))
    if env.type != boot.TYPE:
        raise Malformed(f"{channel}/{arch}: a {env.type}, not a boot_manifest")
    body = env.body
    if body.get("channel") != channel or body.get("arch") != arch:
        raise Malformed(f"{channel}/{arch}: the manifest is for "
                        f"{body.get('channel')!r}/{body.get('arch')!r}")
    return data


class Manifests:
    """The signed manifests a provider serves, keyed by (channel, arch).

    From a mapping (fixed) or a directory ``<channel>/<arch>/manifest.json``, re-read
    when a file changes, so a newly signed manifest is served without a restart.
    """

    def __init__(self, source: Path | Mapping[Key, bytes | dict[str, Any]]) -> None:
        self._dir: Path | None = None
        self._fixed: dict[Key, bytes] = {}
        self._seen: dict[Key, tuple[int, int, bytes]] = {}
        self._ids: dict[bytes, frozenset[str]] = {}
        self._lock = threading.Lock()
        if isinstance(source, (str, Path)):
            self._dir = Path(source)
        else:
            for key, doc in source.items():
                data = doc if isinstance(doc, bytes) else canonical(envelope.parse(doc).to_json())
                self._fixed[key] = _check_slot(key, data)

    def get(self, channel: str, arch: str) -> bytes | None:
        key = (channel, arch)
        if self._dir is None:
            return self._fixed.get(key)
        path = self._dir / channel / arch / "manifest.json"  # both parts matched MANIFEST_RE
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            cached = self._seen.get(key)
            if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
                return cached[2]
        try:
            data = _check_slot(key, path.read_bytes())
        except (OSError, PhaseError) as e:
            log.get().warning("provider.bad_manifest", channel=channel, arch=arch,
                              message=str(e))
            return None
        with self._lock:
            self._seen[key] = (st.st_mtime_ns, st.st_size, data)
        return data

    def keys(self) -> list[Key]:
        if self._dir is None:
            return list(self._fixed)
        out = []
        for path in self._dir.glob("*/*/manifest.json"):
            channel, arch = path.parent.parent.name, path.parent.name
            if MANIFEST_RE.fullmatch(f"/{channel}/{arch}/manifest.json"):
                out.append((channel, arch))
        return out

    def artifacts(self) -> frozenset[str]:
        """The content ids the served manifests name: all a provider may serve."""
        ids: set[str] = set()
        for channel, arch in self.keys():
            data = self.get(channel, arch)
            if data is None:
                continue
            with self._lock:
                known = self._ids.get(data)
            if known is None:
                body = envelope.parse(parse(data)).body  # checked in get()
                known = frozenset(str(a.get("id")) for _, a in boot.artifacts(body)
                                  if isinstance(a, dict))
                with self._lock:
                    if len(self._ids) > 256:
                        self._ids.clear()
                    self._ids[data] = known
            ids |= known
        return frozenset(ids)


# -- HTTP ----------------------------------------------------------------------
class _Handler(BoundedHandler):
    server: ProviderServer
    server_version = "phase-boot-provider/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.get().debug("provider.request", client=self.client_address[0],
                        line=(format % args)[:200])

    def _simple(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if m := BLOB_RE.fullmatch(path):
            self._blob("sha256:" + m.group(1))
        elif m := MANIFEST_RE.fullmatch(path):
            self._manifest(m.group(1), m.group(2))
        else:
            self._simple(HTTPStatus.NOT_FOUND, "not found")

    def _manifest(self, channel: str, arch: str) -> None:
        data = self.server.manifests.get(channel, arch)
        if data is None:
            self._simple(HTTPStatus.NOT_FOUND, f"no manifest for {channel}/{arch}")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _blob(self, cid: str) -> None:
        path = self.server.checked_path(cid)
        if path is None:
            self._simple(HTTPStatus.NOT_FOUND, f"{cid} is not here")
            return
        try:
            f = open(path, "rb")
        except OSError:
            self._simple(HTTPStatus.NOT_FOUND, f"{cid} is not here")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end = 0, size - 1
            status = HTTPStatus.OK
            rng = self.headers.get("Range")
            if rng is not None and size > 0:
                parsed = _parse_range(rng, size)
                if isinstance(parsed, str):  # "unsatisfiable"
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parsed is not None:
                    start, end = parsed
                    status = HTTPStatus.PARTIAL_CONTENT
            length = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("X-Content-Id", cid)
            self.send_header("ETag", f'"{cid}"')
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD" or length == 0:
                return
            try:
                self.wfile.flush()
                self.connection.sendfile(f, offset=start, count=length)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range → (start, end) inclusive; None to ignore it (serve all)."""
    m = RANGE_RE.fullmatch(value.strip())
    if m is None:
        return None  # multiple ranges or another unit: a full 200 is allowed
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


class ProviderServer(BoundedHTTPServer):
    def __init__(self, address: tuple[str, int], cas: ContentStore, manifests: Manifests,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, _Handler, max_connections)
        self.cas = cas
        self.manifests = manifests
        self._checked: dict[str, tuple[int, int]] = {}
        self._check_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}"

    def checked_path(self, cid: str) -> Path | None:
        """The blob's path if it is a published artifact, present, and its bytes hash
        to ``cid`` (the hash is cached by size+mtime)."""
        if cid not in self.manifests.artifacts():
            return None
        path = self.cas.path_for(cid)
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._check_lock:
            if self._checked.get(cid) == stamp and verdict_fresh(st.st_mtime_ns):
                return path
        try:
            path = self.cas.verify(cid)  # quarantines and raises on a corrupt blob
        except PhaseError:
            return None
        st = path.stat()
        with self._check_lock:
            self._checked[cid] = (st.st_size, st.st_mtime_ns)
        return path

    def start(self) -> ProviderServer:
        """Serve in a daemon thread; returns self (use ``shutdown()`` to stop)."""
        self._thread = threading.Thread(target=self.serve_forever, name="boot-provider",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def make_server(cas: ContentStore, manifests: Path | Mapping[Key, Any] | Manifests,
                host: str = "127.0.0.1", port: int = 0) -> ProviderServer:
    """A bound provider that is not serving yet (call ``serve_forever`` or ``start``)."""
    m = manifests if isinstance(manifests, Manifests) else Manifests(manifests)
    return ProviderServer((host, port), cas, m)


def serve(cas: ContentStore, manifests: Path | Mapping[Key, Any] | Manifests,
          host: str = "127.0.0.1", port: int = 0) -> ProviderServer:
    """Bind and serve in a background thread; ``server.url`` is the base URL."""
    return make_server(cas, manifests, host, port).start()


# -- signing -------------------------------------------------------------------
def _file_artifact(cas: ContentStore | None, path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"no such file: {path}")
    if cas is not None:
        cid = cas.put_file(path)
        return {"id": cid, "size": cas.path_for(cid).stat().st_size}
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"id": "sha256:" + h.hexdigest(), "size": size}


def sign_boot_manifest(*, kernel: Path, initramfs: Path, cmdline: str, keys: Sequence[Path],
                       state_file: Path, channel: str = "stable", arch: str = "x86_64",
                       mirrors: Sequence[str] = (), cas: ContentStore | None = None,
                       manifests_dir: Path | None = None, lifetime_s: int = 30 * 86400,
                       version: int | None = None, now: int | None = None) -> dict[str, Any]:
    """Sign a boot manifest; the version is one above the state file's (or ``version``).

    Both files go into ``cas`` when given; the envelope goes to
    ``<manifests_dir>/<channel>/<arch>/manifest.json`` when given. The state file
    (JSON ``{"boot/<channel>/<arch>": {"version": N, "id": ...}}``) is updated under a
    lock, so two signers never issue the same version.
    """
    if not keys:
        raise UsageError("at least one --key is needed")
    signers = [identity.load(Path(k)) for k in keys]
    created = timefmt.now() if now is None else now
    kernel_a = _file_artifact(cas, kernel)
    initrd_a = _file_artifact(cas, initramfs)
    slot = f"boot/{channel}/{arch}"
    state_file = Path(state_file)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with locked(state_file.with_name(state_file.name + ".lock")):
        state = _read_state(state_file)
        prev = int(state.get(slot, {}).get("version", 0))
        if version is None:
            version = prev + 1
        elif version <= prev:
            raise UsageError(f"version {version} is not above the last signed version {prev} "
                             f"for {channel}/{arch}", hint="omit --version to bump it")
        body = boot.build(channel=channel, arch=arch, version=version, now=created,
                          lifetime_s=lifetime_s, kernel=kernel_a, initramfs=initrd_a,
                          cmdline=cmdline, mirrors=list(mirrors))
        env = envelope.sign(boot.TYPE, body, signers)
        state[slot] = {"version": version, "id": envelope.document_id(boot.TYPE, body)}
        write_atomic(state_file, json.dumps(state, sort_keys=True, indent=1).encode() + b"\n",
                     mode=0o644)
    if manifests_dir is not None:
        dest = Path(manifests_dir) / channel / arch / "manifest.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, canonical(env) + b"\n")
    return env


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise IOFailure(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError
    except ValueError:
        raise Malformed(f"version state file {path} is damaged",
                        hint="restore it; signing a lower version would be a rollback") from None
    return doc


# -- CLI -----------------------------------------------------------------------
def main(args: dict[str, Any]) -> int:
    if args["serve"]:
        return _cmd_serve(args)
    return _cmd_sign(args)


def _cmd_serve(args: dict[str, Any]) -> int:
    cas = ContentStore(Path(args["--cas"]))
    try:
        port = int(args["--port"])
    except ValueError:
        raise UsageError(f"bad --port {args['--port']!r}") from None
    server = make_server(cas, Path(args["--manifests"]), args["--host"], port)
    print(json.dumps({"v": 1, "type": "provider", "url": server.url}), flush=True)
    log.get().info("provider.listening", url=server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _cmd_sign(args: dict[str, Any]) -> int:
    manifests = Path(args["--manifests"]) if args["--manifests"] else None
    if args["--state"]:
        state = Path(args["--state"])
    elif manifests is not None:
        state = manifests / "versions.json"
    else:
        raise UsageError("give --state or --manifests (the version state lives there)")
    env = sign_boot_manifest(
        kernel=Path(args["--kernel"]), initramfs=Path(args["--initramfs"]),
        cmdline=args["--cmdline"] or "", keys=[Path(k) for k in args["--key"]],
        state_file=state, channel=args["--channel"], arch=args["--arch"],
        mirrors=args["--mirror"], cas=ContentStore(Path(args["--cas"])) if args["--cas"] else None,
        manifests_dir=manifests, lifetime_s=int(args["--lifetime"]),
        version=int(args["--version"]) if args["--version"] else None,
        now=timefmt.parse_time(args["--now"]) if args["--now"] else None)
    print(json.dumps(env, ensure_ascii=True, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    from phase_core.cli.runner import run_cli

    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run_cli("plasmd-provider", __doc__ or "", "0.1.0", main, sys.argv[1:]))
