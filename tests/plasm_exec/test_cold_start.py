"""A cold `plasm-exec run`: what it imports, and that leaving by os._exit loses nothing.

The import budget: modules that must not be loaded on the path of a plain run
(docs/performance.md says what each one cost). The exit: `python -m plasm_exec`
ends with ``cli.leave`` (flush, then ``os._exit``); the same commands run through
``cli.cli`` with the interpreter's normal exit give the same status, the same
bytes on stdout, the same log events, and the same files. (Broken pipes, 141, and
signals, 130 / 143, leave through ``python -m plasm_exec`` in test_run_streams.py and
test_signals.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phase_core import documents, receipt
from phase_core.canonical import content_id
from phase_core.identity import load
from phase_core.timefmt import now
from phase_core.trust import Keyring

PY = sys.executable
EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples" / "build"

# Never loaded by `plasm-exec run <module>` without --receipt: what they would cost
# is in docs/performance.md ("plasm-exec cold start").
NOT_ON_THE_RUN_PATH = [
    "dataclasses", "inspect", "ast", "dis", "tokenize", "linecache",  # dataclasses
    "docopt", "difflib", "phase_core.cli.usage",  # argument parsing
    "traceback", "textwrap",  # error reports
    "json", "phase_core.canonical", "phase_core.cli.jsonl",  # records
    "_hashlib",  # OpenSSL: small inputs use the built-in _sha256
    "decimal", "_decimal",  # sizes with a fraction only
    "secrets", "random", "hmac", "base64",  # temp names
    "calendar", "datetime", "locale", "tomllib",  # time parsing, keyrings
    "nacl", "phase_core.identity", "phase_core.cas", "phase_core.envelope",  # --receipt
    "plasm_exec.receipts", "plasm_exec.job", "plasm_exec.reexec", "plasm_exec.capture",
    "plasm_exec.determinism",  # --deterministic only
    "asyncio", "concurrent", "logging", "subprocess", "tempfile", "email", "http",
    "wasmtime",  # its library is bound directly (plasm_exec.capi)
    "typing", "platform",  # annotations only (TYPE_CHECKING); os.uname() for the machine
]

# the in-process twin of `python -m plasm_exec`: same commands, the interpreter's normal exit
NORMAL_EXIT = "import sys; from plasm_exec.cli import cli; sys.exit(cli(sys.argv[1:]))"


def _env(home: Path) -> dict[str, str]:
    # stdout block-buffered, as for any user whose shell does not set PYTHONUNBUFFERED
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PHASE_HOME": str(home)}


# not loaded by `run --receipt` either (signing needs neither the Envelope dataclass
# nor the keyring reader; temp names and nonces come from os.urandom; canonical JSON
# and the key file go through the C accelerator `_json`, not the json package)
NOT_ON_THE_RECEIPT_PATH = [
    "dataclasses", "inspect", "docopt", "traceback", "decimal", "secrets", "random",
    "_hashlib", "json", "base64",
    "calendar", "datetime", "locale", "tomllib", "phase_core.envelope", "phase_core.trust",
    "phase_core.documents", "plasm_exec.job", "plasm_exec.reexec", "plasm_exec.capture",
]


def _loaded(args: list[str], home: Path) -> set[str]:
    code = ("import sys\nfrom plasm_exec.cli import cli\n"
            "rc = cli(sys.argv[1:])\n"
            "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
            "sys.exit(rc)")
    p = subprocess.run([PY, "-c", code, *args], input=b"Hello, World", capture_output=True,
                       env=_env(home), timeout=120)
    assert p.returncode == 0 and p.stdout == b"dlroW ,olleH", p.stderr
    return set(p.stderr.decode().rpartition("MODULES ")[2].split())


def _hits(names: list[str], loaded: set[str]) -> list[str]:
    return sorted(m for m in names if m in loaded or any(x.startswith(m + ".") for x in loaded))


def test_run_path_import_budget(tmp_path):
    loaded = _loaded(["run", str(EXAMPLES / "hello.wasm")], tmp_path / "h")
    assert "plasm_exec.capi" in loaded and "plasm_exec.engine" in loaded
    assert _hits(NOT_ON_THE_RUN_PATH, loaded) == []


def test_receipt_path_import_budget(tmp_path):
    r = tmp_path / "r.json"
    args = ["run", f"--receipt={r}", str(EXAMPLES / "hello.wasm")]
    first = _loaded(args, tmp_path / "h")  # makes the key, writes module and stdin
    assert "phase_core.signing" in first and "nacl" in first and r.exists()
    # new blobs are hashed by OpenSSL; the key's creation is logged (a JSON record)
    assert set(_hits(NOT_ON_THE_RECEIPT_PATH, first)) <= {"_hashlib", "json"}
    again = _loaded(args, tmp_path / "h")  # the usual case: the store has both
    assert _hits(NOT_ON_THE_RECEIPT_PATH, again) == []


def test_inputs_the_store_has_are_not_written_again(tmp_path):
    home = tmp_path / "h"
    blobs = []
    for _ in range(2):
        p = subprocess.run([PY, "-m", "plasm_exec", "run", f"--receipt={tmp_path / 'r.json'}",
                            str(EXAMPLES / "hello.wasm")], input=b"Hello, World",
                           capture_output=True, env=_env(home), timeout=120)
        assert p.returncode == 0, p.stderr
        body = json.loads((tmp_path / "r.json").read_text())["body"]
        paths = [home / "cas" / "sha256" / c[7:9] / c[9:] for c in (body["module"],
                                                                    body["stdin"])]
        blobs.append([(x.stat().st_ino, x.read_bytes()) for x in paths])
    assert blobs[0] == blobs[1]  # same files (inodes): not rewritten by the second run


def test_write_files_in_order_whole_and_no_temp_left(tmp_path, monkeypatch):
    from plasm_exec.runreceipt import write_files
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    b.write_bytes(b"old")
    synced: list[str] = []
    import phase_core.fsutil as fsutil
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    write_files([(a, b"A"), (b, b"B")])
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    assert synced == [str(tmp_path)]  # one directory fsync for both
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json", "b.json"]
    # the second file cannot be written: nothing is renamed (every file is written
    # before the first rename), both keep their bytes, and no temp file is left
    from phase_core.errors import PhaseError
    with pytest.raises(PhaseError):
        write_files([(a, b"A2"), (tmp_path / "missing" / "c.json", b"C")])
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_cold_run_makes_no_garbage_collection(tmp_path):
    code = ("import gc, os, sys\n"
            "gc.callbacks.append(lambda phase, info: phase == 'start' and os.write(2, b'GC\\n'))\n"
            "sys.argv[0] = 'plasm-exec'\n"
            "from plasm_exec.cli import entry\nentry()")
    p = subprocess.run([PY, "-c", code, "run", str(EXAMPLES / "hello.wasm")],
                       input=b"Hello, World", capture_output=True, env=_env(tmp_path / "h"),
                       timeout=120)
    assert p.returncode == 0 and p.stdout == b"dlroW ,olleH", p.stderr
    # about 35 at Python's default threshold; one may come before entry() raises it,
    # when the interpreter's own start-up left the counter near the default
    assert p.stderr.count(b"GC\n") <= 1


def _both(args: list[str], home: Path, stdin: bytes = b"", **kw) -> list[
        subprocess.CompletedProcess]:
    """The command run twice, each in a fresh home: leaving by os._exit, and by the
    normal exit."""
    out = []
    for i, launch in enumerate((["-m", "plasm_exec"], ["-c", NORMAL_EXIT])):
        out.append(subprocess.run([PY, *launch, *args], input=stdin, capture_output=True,
                                  env=_env(home / str(i)), timeout=120, **kw))
    return out


def _events(stderr: bytes) -> list[tuple[str, object]]:
    recs = [json.loads(ln) for ln in stderr.splitlines() if ln.strip()]
    return [(r["event"], r.get("exit_code")) for r in recs]


@pytest.mark.parametrize("case", [
    "ok", "guest_exit_7", "trap", "out_of_fuel", "timeout", "output_limit", "usage",
    "missing_module", "bad_module", "bad_import", "missing_dir", "io_error", "missing_key", "help",
])
def test_exit_status_and_logs_unchanged(case, tmp_path, write_guest, wasm_exit):
    mod = str(EXAMPLES / "hello.wasm")
    args = {
        "ok": ["run", "-v", mod],
        "guest_exit_7": ["run", str(_written(tmp_path, "exit7.wasm", wasm_exit(7)))],
        "trap": ["run", str(EXAMPLES / "trap.wasm")],
        "out_of_fuel": ["run", "--fuel=1000", str(write_guest("spin"))],
        "timeout": ["run", "--timeout=300ms", str(write_guest("spin"))],
        "output_limit": ["run", "--max-output=1K", str(write_guest("flood"))],
        "usage": ["run", "--bogus", mod],
        "missing_module": ["run", str(tmp_path / "nosuch.wasm")],
        "bad_module": ["run", str(_written(tmp_path, "text.wasm", b"not wasm at all"))],
        "bad_import": ["run", str(write_guest("bad_import"))],
        "missing_dir": ["run", f"--receipt={tmp_path / 'no' / 'dir' / 'r.json'}", mod],
        "io_error": ["run", f"--receipt={_written(tmp_path, 'f', b'')}/r.json", mod],
        "missing_key": ["run", f"--receipt={tmp_path / 'r.json'}",
                        f"--key={tmp_path / 'nokey'}", mod],
        "help": ["--help"],
    }[case]
    want = {"ok": 0, "guest_exit_7": 7, "trap": 134, "out_of_fuel": 151, "timeout": 152,
            "output_limit": 154, "usage": 64, "missing_module": 66, "bad_module": 65,
            "bad_import": 65, "missing_dir": 66, "io_error": 74, "missing_key": 66, "help": 0}[case]
    fast, normal = _both(args, tmp_path / "h", stdin=b"Hello, World")
    assert fast.returncode == normal.returncode == want, (fast.stderr, normal.stderr)
    assert fast.stdout == normal.stdout
    if case != "help":
        assert _events(fast.stderr) == _events(normal.stderr)
        assert b"Traceback" not in fast.stderr


def test_internal_error_exit_unchanged(tmp_path):
    """A bug (exit 70, its traceback logged) leaves the same way through both exits."""
    boom = ("import sys\nimport plasm_exec.run\n"
            "def boom(*a, **k):\n    raise RuntimeError('a bug')\n"
            "plasm_exec.run.cmd_run = boom\nsys.argv[0] = 'plasm-exec'\n"
            "from plasm_exec.cli import cli, entry\n")
    out = []
    for i, tail in enumerate(("entry()", "sys.exit(cli(sys.argv[1:]))")):
        out.append(subprocess.run([PY, "-c", boom + tail, "run", str(EXAMPLES / "hello.wasm")],
                                  capture_output=True, env=_env(tmp_path / str(i)),
                                  timeout=120))
    fast, normal = out
    assert fast.returncode == normal.returncode == 70
    assert _events(fast.stderr) == _events(normal.stderr) == [("plasm-exec.internal_error",
                                                                 70)]
    assert b"RuntimeError: a bug" in fast.stderr


def _written(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_stdout_to_a_file_keeps_every_byte(tmp_path, write_guest):
    data = os.urandom(3 << 20)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        p = subprocess.run([PY, "-m", "plasm_exec", "run", "-v", str(write_guest("cat"))],
                           input=data, stdout=f, stderr=subprocess.PIPE,
                           env=_env(tmp_path / "h"), timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == data
    assert ("plasm.run.ended", 0) in _events(p.stderr)  # the last log line is whole


def test_a_slow_reader_gets_everything(tmp_path, write_guest):
    data = os.urandom(2 << 20)
    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", str(write_guest("cat"))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(tmp_path / "h"))
    feeder = threading.Thread(target=lambda: (p.stdin.write(data), p.stdin.close()))
    feeder.start()
    got = bytearray()
    # read in small pieces, waiting on the pipe each time: the process can only end
    # once the pipe buffer has room, so it is still writing while we read
    while chunk := p.stdout.read1(512):
        got += chunk
        threading.Event().wait(0.0005)
    feeder.join()
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert bytes(got) == data


def test_receipt_files_are_whole_and_valid_after_exit(tmp_path):
    home = tmp_path / "h"
    r = tmp_path / "r.json"
    p = subprocess.run([PY, "-m", "plasm_exec", "run", f"--receipt={r}",
                        str(EXAMPLES / "hello.wasm")], input=b"Hello, World",
                       capture_output=True, env=_env(home), timeout=120)
    assert p.returncode == 0, p.stderr
    env = json.loads(r.read_text())
    ident = load(home / "key")
    keys = Keyring().with_key("w", ident.node_id, ["worker"])
    v = documents.verify(env, documents.Policy(keys, now(), expected_type=receipt.TYPE))
    assert v.body["stdin"] == content_id(b"Hello, World")
    assert v.body["stdout"] == content_id(b"dlroW ,olleH")
    man = json.loads((tmp_path / "r.manifest.json").read_text())
    assert man["body"]["stdin"] == v.body["stdin"]
    cas = home / "cas" / "sha256"
    for cid in (v.body["module"], v.body["stdin"]):
        h = cid[7:]
        assert content_id((cas / h[:2] / h[2:]).read_bytes()) == cid
    leftovers = [x.name for x in tmp_path.iterdir() if x.name.startswith(".")]
    assert leftovers == []  # no temp file of the atomic writes is left behind
    assert list((home / "cas" / "tmp").iterdir()) == []
