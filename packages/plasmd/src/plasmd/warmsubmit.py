"""The warm ``plasmd submit``: the job handed to the home's running plasmd.

When a plasmd runs for the home and this process runs as the node's user, the
command sends one ``submit`` request over the control socket (docs/local-api.md):
the node reads the module and stdin files itself, signs the manifest with its key
(the key the command would have signed with), runs the job (on itself when
``--peer`` names it, without a QUIC hop; else over its warm connection to the
peer), verifies the receipt and answers with one ``job_result`` line.

For the common command lines this module is that whole path, and beyond what the
interpreter loads to start it imports three C modules (``_socket``, ``_json``,
``binascii``): no ``typing``, ``json``, ``socket``, ``re`` or ``base64``, which
would cost more than the job (docs/performance.md, "Cold and local submit").
Anything else returns None before a byte is read or sent, and the general path
(``plasmd.submitcmd``) takes the command: no daemon, another user's daemon,
private mode's abstract socket, ``--ephemeral-key``, limit or ``--env`` options,
a module from a pipe, no ``--peer``, and every form docopt parses. A failure
imports what it needs to report itself exactly as the general path does.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported on this path
if TYPE_CHECKING:
    from typing import Any, NoReturn

MAX_ANSWER = 64 << 20  # a job_result line (plasmd.clientlocal.MAX_ANSWER)
MAX_INLINE = 4 << 20  # inline bytes the node takes (plasmd.localjobs.MAX_INLINE)
DEADLINE_S = 30 + 30 + 30  # the default wall-clock limit + the client's 30 s + 30 s
# how a fence-ended run exits: plasm-exec's table (plasm_exec.run.FENCE_EXIT; a test
# keeps the two equal), here so that a warm submit need not import plasm-exec
FENCE_EXIT = {"trapped": 134, "out_of_fuel": 151, "timeout": 152, "memory_limit": 153,
              "output_limit": 154}


def home_dir(explicit: str | os.PathLike[str] | None) -> str:
    """The Phase home as ``phase_core.home.resolve`` finds it (a test keeps the two
    equal), without importing pathlib."""
    if explicit:
        return os.fspath(explicit)
    for var, sub in (("PHASE_HOME", ""), ("XDG_DATA_HOME", "phase")):
        value = os.environ.get(var)
        if value:
            return os.path.join(value, sub) if sub else value
    return os.path.join(os.path.expanduser("~"), ".local", "share", "phase")


def node_path(path: str) -> str | None:
    """The absolute path the node should open for the file ``path`` names, or None
    when the bytes must travel instead: a pipe, a terminal, a deleted file. A name
    like ``/dev/stdin`` or ``/proc/self/fd/0`` is resolved to the file behind it
    (``--stdin=/dev/stdin < file``): opened by the node, it would be the node's."""
    real = os.path.realpath(path)
    if real.startswith(("/proc/", "/dev/")) or not os.path.isfile(real):
        return None
    full = os.path.abspath(path)
    return real if full.startswith(("/proc/", "/dev/")) else full


def finish(code: int) -> NoReturn:
    """Flush what we wrote, then leave without the interpreter's teardown (module
    finalisers, the GC of every object): nothing of ours is left unwritten, since
    stdout and stderr are flushed here and every file was written atomically."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 141
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def main(argv: list[str]) -> int | None:
    """Run ``plasmd submit`` through the home's daemon; None: not handled here."""
    from plasmd.fastargs import LIMIT_OPTIONS, fast_args, peer_form

    args = fast_args(argv)
    if (args is None or args["--ephemeral-key"] or args["--env"] or not args["--peer"]
            or not peer_form(args["--peer"]) or any(args[k] for k in LIMIT_OPTIONS)
            or (os.environ.get("PHASE_LOG_FORMAT") or "auto").strip().lower()
            not in ("json", "text", "auto") or not os.path.isfile(args["<module>"])
            or os.path.abspath(args["<module>"]).startswith(("/proc/", "/dev/"))
            or (args["--stdin"] and not os.path.exists(args["--stdin"]))):
        return None
    try:
        import _json
        import _socket
    except ImportError:  # another interpreter: the general path works everywhere
        return None
    home = home_dir(args["--home"])
    sock = _connect(_socket, home)
    if sock is None:
        return None
    try:
        return _Warm(_json, _socket, home, args).run(sock)
    except BaseException as e:  # each as the runner would report it
        return _failed(e, args)


def _connect(_socket: Any, home: str) -> Any:
    """The home's daemon, when it runs as this user (or we are root), else None."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(os.path.join(home, "plasmd.sock"))
        creds = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        s.close()
        return None
    uid = int.from_bytes(creds[4:8], sys.byteorder, signed=True)
    if os.getuid() not in (uid, 0):
        s.close()
        return None
    return s


def _error(kind: str, message: str, **kw: Any) -> BaseException:
    from phase_core import errors

    err: BaseException = getattr(errors, kind)(message, **kw)
    return err


class _Warm:
    def __init__(self, _json: Any, _socket: Any, home: str, args: dict[str, Any]) -> None:
        self.quote = _json.encode_basestring_ascii
        self.scan = _json.make_scanner(_ScanContext())
        self._socket = _socket
        self.home = home
        self.args = args

    # -- JSON without the json package ------------------------------------------------
    def encode(self, x: Any) -> str:
        """``json.dumps(x, separators=(",", ":"))``, byte for byte (a test checks)."""
        if isinstance(x, str):
            return str(self.quote(x))
        if x is True or x is False or x is None:
            return "true" if x else "false" if x is False else "null"
        if isinstance(x, int):
            return int.__repr__(x)
        if isinstance(x, dict):
            return "{" + ",".join(f"{self.quote(k)}:{self.encode(v)}"
                                  for k, v in x.items()) + "}"
        if isinstance(x, (list, tuple)):
            return "[" + ",".join(self.encode(v) for v in x) + "]"
        if isinstance(x, float) and x == x and x not in (float("inf"), float("-inf")):
            return float.__repr__(x)
        raise TypeError(f"cannot encode {type(x).__name__}")

    def decode(self, line: bytes) -> Any:
        """``json.loads(line)``; a line that is not JSON is the node breaking the API."""
        try:
            s = line.decode("utf-8")
            start = len(s) - len(s.lstrip(" \t\n\r"))
            obj, end = self.scan(s, start)
            if s[end:].strip(" \t\n\r"):
                raise ValueError("extra data")
        except (ValueError, StopIteration, RecursionError):
            raise _error("ProtocolViolation", "plasmd sent a line that is not JSON") from None
        return obj

    # -- the job ------------------------------------------------------------------------
    def request(self) -> dict[str, Any]:
        """The local node API's ``submit``, as ``plasmd.client.Client`` builds it
        (without progress records, which the command does not show)."""
        a = self.args
        module = a["<module>"]
        req: dict[str, Any] = {"v": 1, "type": "submit",
                               "module": {"path": os.path.abspath(module)}}
        if a["--stdin"]:
            path = node_path(a["--stdin"])
            if path is not None:
                req["stdin"] = {"path": path}  # the node reads it
            else:  # a pipe (/dev/stdin, <(...)): its bytes, read here, once
                req["stdin"] = {"b64": _b64(read_capped(a["--stdin"]))}
        req["argv0"] = os.path.basename(module)
        if a["<arg>"]:
            req["args"] = list(a["<arg>"])
        if a["--deterministic"]:
            req["deterministic"] = True
        req["where"] = {"peer": a["--peer"]}
        req["submitter"] = "node"
        req["progress"] = False  # the command shows none: two lines (and wake-ups) fewer
        return req

    def run(self, sock: Any) -> int:
        req = self.request()
        try:
            rec = self.call(sock, req)
        except _Unseen:  # the node runs in another mount namespace: send the bytes
            sock = _connect(self._socket, self.home)
            if sock is None:
                raise _error("Unavailable", "plasmd went away before the job's result") from None
            rec = self.call(sock, _inlined(req))
        return self.output(rec)

    def call(self, sock: Any, req: dict[str, Any]) -> dict[str, Any]:
        """Send ``req`` and read its answers until the result (or an error)."""
        try:
            sock.settimeout(DEADLINE_S)
            sock.sendall((self.encode(req) + "\n").encode("ascii"))
            buf, seen = bytearray(), 0
            while True:
                nl = buf.find(b"\n", seen)
                if nl < 0:
                    if len(buf) > MAX_ANSWER:
                        raise _error("ProtocolViolation",
                                     f"an answer line from plasmd is over {MAX_ANSWER} bytes")
                    seen = len(buf)
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise _error("Unavailable",
                                     "plasmd closed the connection before the job's result",
                                     hint="see the node's log (is it shutting down?)")
                    buf += chunk
                    continue
                rec = self.decode(bytes(buf[:nl]))
                del buf[:nl + 1]
                seen = 0
                kind = rec.get("type") if isinstance(rec, dict) else None
                if kind == "job_accepted":
                    if self.args["--manifest-out"]:
                        from plasmd.submitcmd import _write

                        _write(self.args["--manifest-out"], rec["manifest"])
                elif kind == "job_result":
                    return rec
                elif kind == "error":
                    if rec.get("error") == "missing_input" and _unseen_paths(req):
                        raise _Unseen
                    from plasmd.result import NodeError

                    raise NodeError(rec)
        except TimeoutError:
            raise _error("Timeout",
                         f"no result from plasmd within {DEADLINE_S:.0f} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise _error("Unavailable",
                         "plasmd closed the connection before the job's result") from None
        finally:
            sock.close()

    def output(self, rec: dict[str, Any]) -> int:
        """Print the result as the general path does; the guest's exit status."""
        from binascii import a2b_base64

        a = self.args
        try:
            env = rec["envelope"]
            b = env["body"]
            worker = str(rec["worker"])
            out = a2b_base64(rec.get("stdout_b64", ""), strict_mode=True)
            err = a2b_base64(rec.get("stderr_b64", ""), strict_mode=True)
            status = b["exit_code"] if b["ended"] == "exited" else FENCE_EXIT[b["ended"]]
            record = {"v": 1, "type": "job_result", "worker": worker, "job": b["job"],
                      "ended": b["ended"], "exit_code": b["exit_code"],
                      "stdout_id": b["stdout"], "stderr_id": b["stderr"],
                      "stdout_bytes": b["stdout_bytes"], "stderr_bytes": b["stderr_bytes"],
                      "stdout_b64": rec.get("stdout_b64", ""),
                      "stderr_b64": rec.get("stderr_b64", ""),
                      "verified": True, "envelope": env}
            if not isinstance(status, int):
                raise TypeError("exit_code is not an integer")
        except (KeyError, TypeError, ValueError) as e:
            raise _error("ProtocolViolation",
                         f"the node sent a job_result that is not one: {e!r}") from None
        if "@" not in a["--peer"]:
            _logger(a).warning("submit.peer_learned", node_id=worker,
                               hint="pin it next time with --peer=<node-id>@host:port")
        if a["--receipt"]:
            from plasmd.submitcmd import _write

            _write(a["--receipt"], env)
        if not a["--quiet"]:
            try:
                if a["--json"]:
                    _write_fd(1, (self.encode(record) + "\n").encode("ascii"))
                else:
                    _write_fd(1, out)
            except BrokenPipeError:
                return 141
            try:
                _write_fd(2, err)
            except OSError:
                pass
        return status


class _ScanContext:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


class _Unseen(Exception):
    """The node could not find a file we named and we can read it."""


def _unseen_paths(req: dict[str, Any]) -> bool:
    return any(isinstance(spec, dict) and os.path.isfile(spec.get("path", ""))
               for spec in (req.get("module"), req.get("stdin")))


def _inlined(req: dict[str, Any]) -> dict[str, Any]:
    out = dict(req)
    for k in ("module", "stdin"):
        spec = out.get(k)
        if isinstance(spec, dict) and "path" in spec:
            out[k] = {"b64": _b64(read_capped(spec["path"]))}
    return out


def read_capped(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INLINE + 1)
    except FileNotFoundError:
        raise _error("MissingInput", f"no such file: {path}") from None
    if len(data) > MAX_INLINE:
        raise _error("TooLarge", f"{path} is over the {MAX_INLINE} bytes a job's inline "
                     "bytes may have", hint="give a file the node's user can read")
    return data


def _b64(data: bytes) -> str:
    from binascii import b2a_base64

    return b2a_base64(data, newline=False).decode("ascii")


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _logger(args: dict[str, Any]) -> Any:
    """The logger as ``plasmd.submitcmd.fast_main`` sets it up (main checked the
    format already)."""
    from phase_core import log

    logger = log.configure("plasmd", args["--verbose"], args["--quiet"], "json")
    logger.format = log.resolve_format(None, os.environ.get("PHASE_LOG_FORMAT"),
                                       logger.stream)
    return logger


def _failed(e: BaseException, args: dict[str, Any]) -> int:
    """What the runner would print and exit with for ``e``."""
    from phase_core.errors import PhaseError

    logger = _logger(args)
    if isinstance(e, PhaseError):
        logger.error("plasmd.failed", **e.to_record())
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        logger.warning("plasmd.interrupted")
        return 130
    if isinstance(e, BrokenPipeError):
        return 141
    if isinstance(e, OSError):
        from phase_core.oserrors import from_oserror, is_local_fault

        if is_local_fault(e):
            err = from_oserror(e, None, "access")
            logger.error("plasmd.failed", **err.to_record())
            return err.exit_code
    if not isinstance(e, Exception):
        raise e  # SystemExit and the like
    import traceback

    logger.error("plasmd.internal_error", error="internal",
                 message=f"internal error: {type(e).__name__}: {e} (this is a bug)",
                 traceback="".join(traceback.format_exception(e)), exit_code=70)
    return 70
