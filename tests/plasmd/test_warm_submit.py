"""The warm local ``plasmd submit`` (docs/performance.md, "Cold and local submit";
docs/local-api.md): the command hands the job to the home's running plasmd with
the fewest imports, and a job whose peer is that node itself runs on its job
threads without a QUIC hop to itself, still admitted, replay-protected, fenced,
receipted and durable before the reply."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_core.identity import load as load_identity
from plasmd import fastargs, warmsubmit
from plasmd.submit import make_manifest
from tests.conftest import BROKEN_MODULE, script
from tests.plasmd.conftest import EXAMPLES, HELLO, init_home, start_node
from tests.plasmd.test_local_api import Api

PEER_RE = re.compile(r"(?:[0-9a-f]{64}@)?[^@\s]+:[0-9]{1,5}")  # what --peer looked like


def warm(home, *args, **kw) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([script("plasmd"), "submit", f"--home={home}", *map(str, args)],
                          capture_output=True, timeout=120, **kw)


def errors_from(code: int, homes: tuple[Path, ...], *args: object) -> list[dict]:
    """``plasmd submit`` with ``args`` from each of ``homes`` (one with a node running,
    one without): each must exit ``code``; the error record each logged last."""
    errors = []
    for home in homes:
        r = warm(home, *args)
        assert r.returncode == code, r.stderr[-2000:]
        errors.append(json.loads(r.stderr.strip().splitlines()[-1]))
    return errors


def transport_unused(st: dict) -> bool:
    """No QUIC connection reached the node (it dialled no one, least of all itself)."""
    return st["connections"] == 0 and st["transport"].get("connections_opened", 0) == 0


def test_a_warm_submit_to_the_node_itself_needs_no_quic_and_its_receipt_verifies(
        node_factory, tmp_path):
    n = node_factory("local")
    (tmp_path / "in.txt").write_bytes(b"Hello, World")
    r = warm(n.home, HELLO, f"--stdin={tmp_path / 'in.txt'}", f"--peer={n.peer}",
             f"--receipt={tmp_path / 'r.json'}", f"--manifest-out={tmp_path / 'm.json'}")
    assert (r.returncode, r.stdout) == (0, b"dlroW ,olleH"), r.stderr[-2000:]
    keys = tmp_path / "workers.toml"
    keys.write_text(f'[keys.w]\nkey = "{n.node_id}"\nroles = ["worker"]\n')
    v = subprocess.run([script("phase-verify"), f"--keys={keys}", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    verified = json.loads(v.stdout)
    assert verified["doc_type"] == "receipt" and verified["signer_keys"] == [n.node_id]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["signatures"][0]["key"] == n.node_id  # signed by the node's key
    # by address alone (the id is learned, and said), and as a --json record
    r = warm(n.home, HELLO, f"--stdin={tmp_path / 'in.txt'}", f"--peer=127.0.0.1:{n.port}",
             "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout)
    assert rec["type"] == "job_result" and rec["worker"] == n.node_id and rec["verified"]
    assert b"submit.peer_learned" in r.stderr
    st = n.status()
    assert st["counters"]["local_jobs"] == 2 and st["jobs"]["done"] == 2
    assert st["jobs"]["submitters"] == 0  # no job left counted against its submitter
    assert st["counters"]["journal_lines_flushed"] == 2  # both ids recorded (replay)
    assert transport_unused(st), st


def test_the_warm_json_record_is_the_general_paths(node_factory, tmp_path):
    """The lean path prints byte for byte what plasmd.client's Result prints."""
    from plasmd.client import Client

    n = node_factory("local")
    r = warm(n.home, HELLO, f"--peer={n.peer}", "--json", "--stdin=/dev/stdin",
             input=b"Hello, World")
    assert r.returncode == 0, r.stderr[-2000:]
    ours = json.loads(r.stdout)
    res = Client(n.home, mode="daemon").submit(HELLO, stdin=b"Hello, World", peer=n.peer)
    theirs = res.record()
    assert list(ours) == list(theirs)
    assert r.stdout == (json.dumps(ours, separators=(",", ":")) + "\n").encode()
    assert ours["stdout_b64"] == theirs["stdout_b64"]


def test_the_receipt_is_in_the_log_and_the_job_in_the_journal_before_the_reply(
        node_factory, tmp_path):
    """kill -9 the node the moment the client has its result; after a restart the
    receipt is in the log and the job id in the replay journal."""
    n = node_factory("local")
    r = warm(n.home, HELLO, "--stdin=/dev/stdin", f"--peer={n.peer}",
             f"--receipt={tmp_path / 'r.json'}", f"--manifest-out={tmp_path / 'm.json'}",
             input=b"Hello, World")
    n.proc.kill()  # no drain, no close: what was not written before the reply is lost
    n.proc.wait(30)
    assert r.returncode == 0, r.stderr[-2000:]
    job = json.loads((tmp_path / "r.json").read_text())["body"]["job"]
    listed = subprocess.run([script("plasmd"), "receipts", "--verify", f"--home={n.home}"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["job"] for line in listed.stdout.splitlines()] == [job]
    again = start_node(n.home, init=False)
    try:  # the same signed manifest again, to the node itself: a replay
        api = Api(n.home)
        api.send({"v": 1, "type": "submit", "req": "again", "module": {"path": str(HELLO)},
                  "stdin": {"b64": "SGVsbG8sIFdvcmxk"}, "where": {"peer": again.peer},
                  "manifest": json.loads((tmp_path / "m.json").read_text())})
        err = api.until("job_result", "error")[-1]
        api.close()
        assert (err["type"], err["error"], err["exit_code"]) == ("error", "replay", 1), err
        assert again.status()["receipts"] == 1
    finally:
        again.stop()


def test_a_manifest_sent_twice_runs_once_here_too(node_factory):
    """``where: self`` remembers job ids like a remote worker: a replay is refused."""
    n = node_factory("local")
    env = make_manifest(load_identity(n.home / "key"), HELLO.read_bytes(), None,
                        argv=["hello.wasm"])
    api = Api(n.home)
    answers = []
    for req in ("one", "two"):
        api.send({"v": 1, "type": "submit", "req": req, "module": {"path": str(HELLO)},
                  "manifest": env, "progress": False})
        answers.append(api.until("job_result", "error")[-1])
    api.close()
    assert answers[0]["type"] == "job_result", answers[0]
    assert (answers[1]["type"], answers[1]["error"]) == ("error", "replay"), answers[1]
    st = n.status()
    assert st["receipts"] == 1 and st["counters"]["rejected_replay"] == 1


def _wait_running(n, proc) -> None:
    deadline = time.monotonic() + 120  # a hang guard; the loop ends on the event
    while n.status()["jobs"]["running"] != 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def test_ctrl_c_of_a_waiting_client_exits_130_and_the_node_goes_on(node_factory):
    n = node_factory("local", "--workers=1")
    proc = subprocess.Popen([script("plasmd"), "submit", f"--home={n.home}",
                             str(EXAMPLES / "spin.wasm"), f"--peer={n.peer}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_running(n, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert out == b"" and b"plasmd.interrupted" in err
    deadline = time.monotonic() + 120  # the closed connection cancels the guest
    while n.status()["counters"].get("jobs_cancelled", 0) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = warm(n.home, HELLO, "--stdin=/dev/stdin", f"--peer={n.peer}", input=b"abc")
    assert (r.returncode, r.stdout) == (0, b"cba"), r.stderr[-2000:]
    st = n.status()
    assert n.proc.poll() is None and st["receipts"] == 1 and transport_unused(st)


def test_a_read_only_home_still_works_for_the_client(node_factory, tmp_path):
    n = node_factory("local")
    r = warm(n.home, HELLO, "--stdin=/dev/stdin", f"--peer={n.peer}", input=b"rw")
    assert r.returncode == 0, r.stderr[-2000:]  # the node has made its files by now
    os.chmod(n.home, 0o555)  # the client may write nothing there
    try:
        r = warm(n.home, HELLO, "--stdin=/dev/stdin", f"--peer={n.peer}", input=b"ro")
    finally:
        os.chmod(n.home, 0o755)
    assert (r.returncode, r.stdout) == (0, b"or"), r.stderr[-2000:]


PROBE = """
import os, sys
from plasmd import cli, warmsubmit
def leave(code):
    os.write(2, ("\\n" + "\\n".join(sorted(sys.modules)) + f"\\ncode={code}\\n").encode())
    os._exit(code)
warmsubmit.finish = leave
sys.argv = ["plasmd", "submit", *sys.argv[1:]]
cli.entry()
"""
# nothing of these on the warm path: a C module or two does the job of each
WARM_NEVER = {"typing", "json", "socket", "re", "base64", "enum", "struct", "pathlib",
              "dataclasses", "asyncio", "docopt", "phase_core", "plasmd.submitcmd",
              "plasmd.client", "plasmd.clientlocal", "plasm_exec", "aioquic", "nacl"}
WARM_BUDGET = 10  # modules beyond the ones a bare interpreter has loaded
BARE = "import os, sys; os.write(2, '\\n'.join(sorted(sys.modules)).encode())"


def test_the_warm_path_imports_almost_nothing(node_factory, tmp_path):
    n = node_factory("local")
    r = subprocess.run([sys.executable, "-c", PROBE, f"--home={n.home}", str(HELLO),
                        f"--peer={n.peer}", "-q"], capture_output=True, text=True,
                       timeout=120)
    assert "code=0" in r.stderr, r.stderr[-2000:]
    mods = set(r.stderr.split("code=")[0].split())
    assert {m for m in mods if m.split(".")[0] in WARM_NEVER or m in WARM_NEVER} == set()
    bare = set(subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True,
                              timeout=60).stderr.split())
    assert "plasmd.warmsubmit" in mods and len(mods - bare) <= WARM_BUDGET, sorted(mods - bare)


PEERS = ["a:1", "a" * 64 + "@h:4433", "[::1]:4433", "h:123456", "h:", ":1", "h:1x",
         "A" * 64 + "@h:1", "a" * 63 + "@h:1", "a" * 64 + "@h@h:1", "h h:1", "h\u2003:1",
         "a:1:2", "h:٣", "@h:1", "h:00001", "x@h:1"]


@pytest.mark.parametrize("text", PEERS)
def test_peer_form_is_the_regular_expression(text):
    assert fastargs.peer_form(text) == bool(PEER_RE.fullmatch(text))


RECORDS = [{"v": 1, "type": "x", "s": "é\u2028\"\\\n\x00\U0001f600", "n": -3, "b": True,
            "f": False, "z": None, "l": [1, "a", {"k": []}], "d": {}, "big": 1 << 70},
           {"a": 0.5, "e": 1e300}]


@pytest.mark.parametrize("rec", RECORDS)
def test_the_lean_json_is_jsons(rec):
    import _json
    import _socket

    w = warmsubmit._Warm(_json, _socket, "/nowhere", {})
    assert w.encode(rec) == json.dumps(rec, separators=(",", ":"))
    line = json.dumps(rec).encode()
    assert w.decode(line) == json.loads(line)


@pytest.mark.parametrize("line", [b"{", b"{} x", b"nope", b"\xff", b"[1,]"])
def test_a_line_that_is_not_json_is_a_protocol_violation(line):
    import _json
    import _socket

    from phase_core.errors import ProtocolViolation

    with pytest.raises(ProtocolViolation):
        warmsubmit._Warm(_json, _socket, "/nowhere", {}).decode(line)


@pytest.mark.parametrize("extra", [[], ["--env=A=1"]], ids=["warm path", "general path"])
def test_stdin_and_module_redirected_from_files_are_ours_not_the_nodes(node_factory,
                                                                      tmp_path, extra):
    """``--stdin=/dev/stdin < file``: the node must read that file, not its own stdin."""
    n = node_factory("local")
    (tmp_path / "in.txt").write_bytes(b"from a file")
    with open(tmp_path / "in.txt", "rb") as f:
        r = warm(n.home, HELLO, "--stdin=/dev/stdin", f"--peer={n.peer}", *extra, stdin=f)
    assert (r.returncode, r.stdout) == (0, b"elif a morf"), r.stderr[-2000:]
    with open(HELLO, "rb") as f:
        r = warm(n.home, "/dev/stdin", f"--stdin={tmp_path / 'in.txt'}", f"--peer={n.peer}",
                 *extra, stdin=f)
    assert (r.returncode, r.stdout) == (0, b"elif a morf"), r.stderr[-2000:]


def test_no_node_found_is_said_in_the_commands_words_with_or_without_a_node(
        node_factory, tmp_path):
    """`plasmd submit` without --peer, discovery finding nobody (the DHT on loopback
    only: a bootstrap port nobody listens on): the same hint whether the home's node
    took the job (it looked) or no node runs for the home (the command looked)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]
    n = node_factory("local")
    cold = tmp_path / "cold"
    init_home(cold)
    for err in errors_from(69, (n.home, cold), HELLO, "--via=dht",
                           f"--bootstrap=127.0.0.1:{nobody}", "--discover-timeout=1s"):
        assert err["error"] == "unavailable" and err["message"].startswith("no node")
        assert err["hint"] == "pass --peer, --bootstrap or --interface", err
    assert n.status()["counters"].get("local_jobs", 0) == 0


def test_a_module_no_found_node_can_compile_is_said_as_a_local_run_would(node_factory,
                                                                          tmp_path):
    """`plasmd submit` without --peer of a module with a WASM header and a broken body:
    every node found (the DHT on loopback only) answers ``bad_module``; each is asked
    in turn, and the command then says what `plasm-exec run` would (exit 65, its hint),
    not "no node accepted the job" (69), whether the home's node looked or the
    command did."""
    from tests.plasmd.conftest import prepare_home

    env = {"PHASE_DHT_UPKEEP_S": "1"}
    first = tmp_path / "w0"
    prepare_home(first, mode="internet", mdns=False, open=True)
    workers = [start_node(first, env=env)]
    try:
        boot = f"127.0.0.1:{workers[0].port}"
        second = tmp_path / "w1"
        prepare_home(second, mode="internet", mdns=False, open=True, bootstrap=(boot,))
        workers.append(start_node(second, env=env))
        broken = tmp_path / "broken.wasm"
        broken.write_bytes(BROKEN_MODULE)
        n = node_factory("local")
        cold = tmp_path / "cold"
        init_home(cold)
        for err in errors_from(65, (n.home, cold), broken, "--via=dht",
                               f"--bootstrap={boot}", "--discover-timeout=4s"):
            assert err["error"] == "bad_module" and "plasm-exec" in err["hint"], err
            assert err["message"].startswith("no node could run the module"), err
        assert sum(w.status()["counters"].get("jobs_failed", 0) for w in workers) >= 2
    finally:
        for w in workers:
            w.stop()
