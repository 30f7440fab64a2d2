"""`plasmd submit` as a user meets it: `--jobs` stopped with Ctrl-C mid-stream exits
130 promptly with whole JSON lines on stdout, one clear log line, no traceback, and the
node goes on serving; a client home on read-only media still submits."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from phase_core import identity
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.plasmd.conftest import HELLO, init_home, submit


def test_ctrl_c_mid_stream(tmp_path: Path, node_factory: Any) -> None:
    node = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    me = identity.load(client / "key")
    hello = HELLO.read_bytes()
    # unbuffered: readline() below must not read past the first line, since
    # communicate() reads the pipe itself and would never see what a buffer held
    proc = subprocess.Popen([script("plasmd"), "submit", f"--home={client}", "--jobs=-",
                             f"--peer={node.peer}", "--max-in-flight=4"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for i in range(8):
            env = make_manifest(me, hello, None, argv=["hello.wasm", str(i)])
            proc.stdin.write((json.dumps({"v": 1, "type": "job", "manifest": env,
                                          "module_path": str(HELLO)}) + "\n").encode())
        proc.stdin.flush()  # stdin stays open: the user has more jobs to type
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "job_result", first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:  # a client that did not stop is not left running after the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stdin.close()
    assert proc.returncode == 130, err.decode()[-2000:]
    for line in out.decode().splitlines():
        assert json.loads(line)["type"] in ("job_result", "error")
    text = err.decode()
    assert "Traceback" not in text, text[-3000:]
    logs = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert [x["event"] for x in logs if x["level"] != "debug"] == ["plasmd.interrupted"], text
    r = submit(tmp_path / "client", node.peer, stdin=b"still there", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"ereht llits"


def test_read_only_client_home(tmp_path: Path, node_factory: Any) -> None:
    """A client home on read-only media (a bind mount: chmod does not stop root)
    still submits many jobs: the client only reads its key and keyring."""
    from tests.phase_core.test_local_faults import read_only

    node = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    me = identity.load(client / "key")
    lines = [json.dumps({"v": 1, "type": "job", "module_path": str(HELLO),
                         "manifest": make_manifest(me, HELLO.read_bytes(), None,
                                                   argv=["hello.wasm", str(i)])})
             for i in range(5)]
    with read_only(client):
        r = subprocess.run([script("plasmd"), "submit", f"--home={client}", "--jobs=-",
                            f"--peer={node.peer}"], input="\n".join(lines) + "\n",
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    results = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(results) == 5 and all(x["type"] == "job_result" for x in results)


def test_read_only_client_home_single_submit(tmp_path: Path, node_factory: Any) -> None:
    from tests.phase_core.test_local_faults import read_only

    node = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    (tmp_path / "in").write_bytes(b"abc")
    with read_only(client):
        r = subprocess.run([script("plasmd"), "submit", f"--home={client}", str(HELLO),
                            f"--peer={node.peer}", f"--stdin={tmp_path / 'in'}",
                            f"--receipt={tmp_path / 'r.json'}"],
                           capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == b"cba" and (tmp_path / "r.json").stat().st_size > 0
