"""The local node API on plasmd's control socket (docs/local-api.md), against real
plasmd processes: every answer checked against its record schema, every request
against its request schema."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from phase_core.identity import Identity
from plasmd.submit import make_manifest
from tests.conftest import ROOT
from tests.plasmd.conftest import EXAMPLES, HELLO
from tests.records import REGISTRY, SCHEMAS, check_record

REQUEST_SCHEMAS = {p.name.removesuffix(".request.schema.json"): json.loads(p.read_text())
                   for p in (ROOT / "docs" / "schemas" / "local-api").glob("*.json")}
HELLO_IN = base64.b64encode(b"Hello, World").decode()


def check_request(req: dict[str, Any]) -> None:
    schema = REQUEST_SCHEMAS[req["type"]]
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema, registry=REGISTRY).validate(req)


class Api:
    """One connection to a node's control socket."""

    def __init__(self, home: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(str(home / "plasmd.sock"))
        self.f = self.sock.makefile("rb")

    def send(self, req: dict[str, Any], *, check: bool = True) -> None:
        if check:
            check_request(req)
        self.sock.sendall(json.dumps(req).encode() + b"\n")

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> dict[str, Any]:
        line = self.f.readline()
        assert line, "the daemon closed the connection"
        rec = json.loads(line)
        check_record(rec, "control socket")
        return rec

    def until(self, *types: str) -> list[dict[str, Any]]:
        out = []
        while True:
            rec = self.read()
            out.append(rec)
            if rec["type"] in types:
                return out

    def close(self) -> None:
        self.f.close()  # the file holds the socket open too
        self.sock.close()


def hello(req: str = "j1", **kw: Any) -> dict[str, Any]:
    r = {"v": 1, "type": "submit", "req": req, "module": {"path": str(HELLO)},
         "stdin": {"b64": HELLO_IN}, "submitter": "node"}
    r.update(kw)
    return r


def test_submit_here_streams_progress_and_a_verified_result(node_factory):
    n = node_factory("node")
    api = Api(n.home)
    api.send(hello())
    recs = api.until("job_result", "error")
    types = [r["type"] for r in recs]
    assert types[0] == "job_accepted" and types[-1] == "job_result", recs[-1]
    assert {"queued", "running"} <= {r["stage"] for r in recs if r["type"] == "job_progress"}
    res = recs[-1]
    assert all(r["req"] == "j1" for r in recs)
    assert base64.b64decode(res["stdout_b64"]) == b"dlroW ,olleH"
    assert res["worker"] == n.node_id and res["verified"] is True
    assert recs[0]["job"] == res["job"] == res["envelope"]["body"]["job"]
    assert recs[0]["submitter"] == n.node_id  # the node signed with its own key

    # the receipt is in the node's log: listed, verified, and verify_receipt agrees
    api.send({"v": 1, "type": "receipts", "req": "r", "verify": True})
    listed = api.until("receipts_end")
    entries = [r for r in listed if r["type"] == "receipt_entry"]
    assert [e["job"] for e in entries] == [res["job"]] and entries[0]["verified"] is True
    assert listed[-1]["count"] == 1 and listed[-1]["more"] is False
    api.send({"v": 1, "type": "verify_receipt", "req": "v", "envelope": res["envelope"],
              "stdout_b64": res["stdout_b64"], "manifest": recs[0]["manifest"]})
    v = api.read()
    assert v["type"] == "verified" and v["req"] == "v" and v["signer_keys"] == [n.node_id]
    # swapped output bytes: rejected with the binding's slug
    api.send({"v": 1, "type": "verify_receipt", "req": "v2", "envelope": res["envelope"],
              "stdout_b64": base64.b64encode(b"something else").decode()})
    bad = api.read()
    assert bad["type"] == "error" and bad["error"] == "wrong_stdout" and bad["exit_code"] == 1
    assert n.status()["counters"]["local_jobs"] == 1
    api.close()


def test_bad_requests_get_error_records_and_the_connection_goes_on(node_factory):
    n = node_factory("node")
    api = Api(n.home)
    api.raw(b"this is not json\n")
    assert api.read()["error"] == "bad_request"
    api.send({"v": 1, "type": "launch", "req": "x"}, check=False)
    e = api.read()
    assert (e["error"], e["req"], e["exit_code"]) == ("bad_request", "x", 65)
    api.send({"v": 1, "type": "submit", "req": "m", "submitter": "node"}, check=False)
    assert api.until("error")[-1]["error"] == "bad_request"
    api.send(hello("u", colour="blue"), check=False)
    e = api.until("error")[-1]
    assert e["error"] == "bad_request" and "colour" in e["message"]
    big = base64.b64encode(b"\0" * ((4 << 20) + 1)).decode()
    api.send(hello("big", module={"b64": big}), check=False)
    assert api.until("error")[-1]["error"] == "too_large"
    api.send(hello("nofile", module={"path": "/nonexistent/x.wasm"}))
    e = api.until("error")[-1]
    assert (e["error"], e["exit_code"]) == ("missing_input", 66)
    import os

    fifo = n.home.parent / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block forever
    api.send(hello("fifo", module={"path": str(fifo)}))
    e = api.until("error")[-1]
    assert e["error"] == "bad_request" and "regular file" in e["message"]
    api.send(hello("k", submitter=Identity.generate().node_id))
    e = api.until("error")[-1]
    assert e["error"] == "not_authorized" and "does not hold" in e["message"]
    api.send({"v": 1, "type": "cancel", "req": "c", "job": "sha256:" + "0" * 64})
    assert api.read()["error"] == "unknown_job"
    api.send({"v": 1, "type": "status", "req": "s"})  # still answering
    st = api.read()
    assert st["type"] == "status" and st["req"] == "s" and st["node_id"] == n.node_id
    assert st["local_api"] == {"connections": 1, "jobs": 0}
    api.close()


def test_a_line_over_the_cap_ends_the_connection_with_too_large(node_factory):
    n = node_factory("node")
    api = Api(n.home)
    api.raw(b"{" + b" " * (8 << 20) + b"\n")
    e = api.read()
    assert e["error"] == "too_large"
    assert api.f.readline() == b""  # closed: the rest of the line cannot be read
    api.close()


def test_a_manifest_signed_by_the_client_runs_here_but_not_on_a_peer(node_factory, tmp_path):
    n = node_factory("node")
    me = Identity.generate()
    module = HELLO.read_bytes()
    env = make_manifest(me, module, b"Hello, World", argv=["hello.wasm"], env={},
                        limits=None, deterministic=False)
    req = {"v": 1, "type": "submit", "req": "mine", "manifest": env,
           "module": {"b64": base64.b64encode(module).decode()}, "stdin": {"b64": HELLO_IN}}
    api = Api(n.home)
    api.send(req)
    recs = api.until("job_result", "error")
    assert recs[-1]["type"] == "job_result", recs[-1]
    assert recs[0]["submitter"] == me.node_id and recs[-1]["worker"] == n.node_id
    api.send({**req, "req": "away", "where": {"peer": "127.0.0.1:9"}})
    e = api.until("error")[-1]
    assert e["error"] == "not_authorized"
    api.send({**req, "req": "wrongbytes", "stdin": {"b64": base64.b64encode(b"x").decode()}})
    assert api.until("error")[-1]["error"] == "digest_mismatch"
    api.close()


def spin(req: str) -> dict[str, Any]:
    return {"v": 1, "type": "submit", "req": req, "module": {"path": str(EXAMPLES / "spin.wasm")},
            "submitter": "node", "limits": {"fuel": 1 << 52, "wall_ms": 120_000}}


def test_cancel_stops_a_running_guest_and_closing_the_connection_cancels_too(node_factory):
    n = node_factory("node", "--workers=1")
    api = Api(n.home)
    api.send(spin("s1"))
    recs = api.until("job_progress")
    while recs[-1].get("stage") != "running":
        recs.append(api.read())
    job = recs[0]["job"]
    api.send({"v": 1, "type": "cancel", "req": "c1", "job": job})
    got = {r["type"]: r for r in (api.read(), api.read())}
    assert got["cancelled"]["job"] == job and got["cancelled"]["req"] == "c1"
    assert (got["error"]["error"], got["error"]["exit_code"], got["error"]["req"]) == (
        "cancelled", 130, "s1")
    # the worker slot is free again: the next job runs; then a client that goes away
    api.send(spin("s2"))
    recs = api.until("job_progress")
    while recs[-1].get("stage") != "running":
        recs.append(api.read())
    api.close()
    other = Api(n.home)
    other.send(hello("after"))  # needs the only worker slot: it was given back
    assert other.until("job_result", "error")[-1]["type"] == "job_result"
    other.close()
    assert n.status()["counters"]["jobs_cancelled"] == 2
    assert n.status()["receipts"] == 1  # nothing recorded for the cancelled ones


def test_the_per_client_job_cap(node_factory):
    n = node_factory("node", "--workers=1")
    api = Api(n.home)
    for i in range(16):
        api.send(spin(f"s{i}") | {"progress": False})
    for _ in range(16):
        assert api.read()["type"] == "job_accepted"
    api.send(hello("17th"))
    e = api.until("error")[-1]
    assert (e["req"], e["error"], e["exit_code"]) == ("17th", "queue_full", 75)
    api.close()


def test_a_job_goes_to_a_named_peer_over_a_warm_connection(node_factory):
    worker = node_factory("worker", "--open")
    local = node_factory("local")
    api = Api(local.home)
    for i in range(2):
        api.send(hello(f"p{i}", where={"peer": worker.peer}))
        recs = api.until("job_result", "error")
        assert recs[-1]["type"] == "job_result", recs[-1]
        assert recs[-1]["worker"] == worker.node_id
        assert base64.b64decode(recs[-1]["stdout_b64"]) == b"dlroW ,olleH"
    st = worker.status()
    assert st["jobs"]["done"] == 2 and st["connections"] == 1  # one connection, reused
    api.close()


def test_plasmd_submit_to_its_own_private_node_runs_without_a_keyring_entry(node_factory,
                                                                           tmp_path):
    """As Phase Boot's node stage does: a private node (ephemeral key, in no keyring),
    and `plasmd submit --home=<its home> --peer=<its address>`. The job goes through the
    local API, the node signs it with its own key and sends it to itself: a node runs
    what its own key signed, and nothing else outside its keyring."""
    import subprocess

    from tests.plasmd.conftest import script

    node = node_factory("priv", "--mode=private")
    stdin = tmp_path / "in.txt"
    stdin.write_bytes(b"Hello, World")
    r = subprocess.run([script("plasmd"), "submit", f"--home={node.home}", str(HELLO),
                        f"--stdin={stdin}", f"--peer=127.0.0.1:{node.port}"],
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout == b"dlroW ,olleH"
    # another key is still refused: the node's own key is the only one trusted implicitly
    other = tmp_path / "other"
    r = subprocess.run([script("plasmd"), "submit", "--ephemeral-key", str(HELLO),
                        f"--stdin={stdin}", f"--peer={node.peer}", f"--home={other}"],
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 1 and b"not_authorized" in r.stderr, r.stderr.decode()[-2000:]


@pytest.mark.parametrize("name", sorted(REQUEST_SCHEMAS))
def test_request_schemas_are_valid(name):
    Draft202012Validator.check_schema(REQUEST_SCHEMAS[name])
    # a request for every answer type documented, and the answers' schemas exist
    assert {"job_accepted", "job_progress", "cancelled", "receipts_end"} <= set(SCHEMAS)


def as_user(uid: int, gid: int, groups: list[int], fn: Any) -> Any:
    """Run ``fn`` in a forked child that has become another user; its JSON result."""
    import os

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            out = fn()
        except BaseException as e:
            out = {"exception": type(e).__name__, "message": str(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _need_root_and_nogroup() -> int:
    import grp
    import os

    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no group named nogroup here")


def test_a_control_group_member_sends_bytes_and_its_own_manifest():
    import os
    import shutil
    import tempfile

    from tests.plasmd.conftest import init_home, start_node

    gid = _need_root_and_nogroup()
    top = Path(tempfile.mkdtemp(prefix="phase-group-"))  # pytest's dirs are 0700
    os.chmod(top, 0o711)
    home = top / "node"
    init_home(home)
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text().replace("[ceilings]", 'control_group = "nogroup"\n\n'
                                           "[ceilings]"))
    os.chmod(home, 0o711)  # the group must be able to reach the socket in the home
    node = start_node(home, init=False)
    try:
        sock = home / "plasmd.sock"
        assert (sock.stat().st_mode & 0o777, sock.stat().st_gid) == (0o660, gid)
        wasm = HELLO.read_bytes()  # read here: the member may not reach the checkout
        module = base64.b64encode(wasm).decode()

        def member() -> Any:
            api = Api(home)
            api.send({"v": 1, "type": "status", "req": "s"})
            out = {"status": api.read()["type"]}
            api.send(hello("path"))  # a file named by path: not for group members
            out["path"] = api.until("error")[-1]["error"]
            api.send(hello("sign", module={"b64": module}))  # nor the node's signature
            out["sign"] = api.until("error")[-1]["error"]
            me = Identity.generate()
            env = make_manifest(me, wasm, b"Hello, World",
                                argv=["hello.wasm"], env={}, limits=None,
                                deterministic=False)
            api.send({"v": 1, "type": "submit", "req": "own", "manifest": env,
                      "module": {"b64": module}, "stdin": {"b64": HELLO_IN}})
            res = api.until("job_result", "error")[-1]
            out["own"] = (res["type"], base64.b64decode(res.get("stdout_b64", "")).decode())
            api.close()
            return out

        got = as_user(65534, 65534, [gid], member)
        assert got == {"status": "status", "path": "not_authorized",
                       "sign": "not_authorized", "own": ["job_result", "dlroW ,olleH"]}

        def stranger() -> Any:
            try:
                Api(home)
            except PermissionError:
                return "refused"
            return "connected"

        assert as_user(65534, 1, [], stranger) == "refused"  # not in the group
    finally:
        node.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_sigterm_lets_a_job_sent_to_a_peer_finish_and_deliver(node_factory):
    import signal

    worker = node_factory("worker", "--open")
    local = node_factory("local")
    api = Api(local.home)
    req = spin("long") | {"where": {"peer": worker.peer},
                          "limits": {"fuel": 3_000_000_000, "wall_ms": 120_000}}
    api.send(req)
    api.until("job_accepted")
    local.signal(signal.SIGTERM)  # drain: no new jobs, the one in flight goes on
    api.send(hello("late"))
    recs = api.until("job_result")
    late = [r for r in recs if r.get("req") == "late"]
    assert late and late[-1]["error"] == "shutting_down"
    assert recs[-1]["req"] == "long" and recs[-1]["ended"] == "out_of_fuel"
    assert recs[-1]["worker"] == worker.node_id
    assert local.proc.wait(60) == 0
    api.close()
