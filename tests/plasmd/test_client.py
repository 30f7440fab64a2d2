"""The Python client (plasmd.client, docs/python-client.md) against real plasmd
processes: through a local daemon, without one (plasm-exec's library in this
process), straight to a remote peer, placement by capabilities with two nodes
(listed peers, and the DHT on loopback), and the runnable examples."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from phase_core.errors import PhaseError, Rejected
from plasmd.client import Client, NodeError
from plasmd.result import FENCE_EXIT
from tests.conftest import ROOT
from tests.plasmd.conftest import HELLO, init_home, prepare_home, start_node

EXAMPLES = ROOT / "packages" / "plasmd" / "examples"


def test_through_the_local_daemon_with_progress(node_factory):
    n = node_factory("node")
    seen: list[str] = []
    r = Client(n.home, mode="daemon").submit(
        HELLO, stdin=b"Hello, World", on_progress=lambda rec: seen.append(rec["type"]))
    assert r.stdout == b"dlroW ,olleH" and r.status == 0 and r.worker == n.node_id
    assert seen[0] == "job_accepted" and "job_progress" in seen
    assert r.manifest is not None and r.verify()["job"] == r.job
    assert n.status()["counters"]["local_jobs"] == 1  # the daemon ran it


def test_without_a_daemon_the_job_runs_in_this_process(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    with pytest.raises(PhaseError) as e:
        Client(home, mode="daemon").submit(HELLO)
    assert e.value.slug == "unavailable" and e.value.exit_code == 69
    r = Client(home).submit(HELLO, stdin=b"Hello, World", args=["x"], env={"A": "1"})
    from phase_core.identity import load

    assert r.stdout == b"dlroW ,olleH" and r.worker == load(home / "key").node_id
    body = r.verify()
    assert body["stdin"] != body["stdout"] and r.manifest["body"]["argv"] == ["hello.wasm", "x"]
    # the receipt binds these bytes and this worker: a swap or another worker is caught
    r.stdout = b"dlroW ,olleh"
    with pytest.raises(Rejected) as e:
        r.verify()
    assert e.value.slug == "wrong_stdout"
    r.stdout = b"dlroW ,olleH"
    with pytest.raises(Rejected):
        r.verify(workers=["0" * 64])
    # a fence is a result, not an exception
    spin = HELLO.with_name("spin.wasm")
    r = Client(home, mode="direct").submit(spin, limits={"fuel": 100_000})
    assert r.ended == "out_of_fuel" and r.status == 151


def test_straight_to_a_remote_peer_and_async(node_factory, tmp_path):
    worker = node_factory("worker", "--open")
    home = tmp_path / "client"
    init_home(home)

    async def two() -> list[bytes]:
        c = Client(home, mode="direct")
        rs = await asyncio.gather(
            c.submit_async(HELLO, stdin=b"abc", peer=worker.peer),
            c.submit_async(HELLO, stdin=b"xyz", peer=worker.peer))
        assert {r.worker for r in rs} == {worker.node_id}
        return [r.stdout for r in rs]

    assert asyncio.run(two()) == [b"cba", b"zyx"]
    assert worker.status()["jobs"]["done"] == 2
    # the handshake proves the node id the peer names
    other = "0" * 63 + "1"
    with pytest.raises(PhaseError):
        Client(home, mode="direct").submit(HELLO, peer=f"{other}@127.0.0.1:{worker.port}")


def test_placement_by_capabilities_among_listed_peers(node_factory):
    w1 = node_factory("w1", "--open")
    w2 = node_factory("w2", "--open")
    local = node_factory("local")
    c = Client(local.home, mode="daemon")
    stages: list[dict[str, object]] = []
    r = c.submit(HELLO, stdin=b"Hello, World", capabilities={"runtime": "wasmtime"},
                 discovery={"peers": [f"127.0.0.1:{w1.port}", w2.peer], "via": "none"},
                 on_progress=stages.append)
    assert r.worker == w1.node_id and r.stdout == b"dlroW ,olleH"
    assert r.manifest["body"]["requirements"] == {"runtime": "wasmtime"}
    w1.stop()  # gone: the next job is placed on the other node
    r = c.submit(HELLO, stdin=b"Hello, World", capabilities={"runtime": "wasmtime"},
                 discovery={"peers": [f"127.0.0.1:{w1.port}", w2.peer], "via": "none"},
                 on_progress=stages.append)
    assert r.worker == w2.node_id
    assert any(s.get("stage") == "skipped" for s in stages)
    with pytest.raises(NodeError) as e:  # no node has this runtime
        c.submit(HELLO, capabilities={"runtime": "no-such-runtime"},
                 discovery={"peers": [w2.peer], "via": "none"})
    assert e.value.slug == "unavailable" and e.value.exit_code == 69
    assert "no match" in e.value.message
    assert w2.status()["jobs"]["done"] == 1


@pytest.mark.slow
def test_placement_through_discovery_on_the_dht(tmp_path):
    """Two internet-mode nodes on loopback: the client's node finds the worker in the
    DHT by its signed capabilities, and never picks itself."""
    env = {"PHASE_DHT_UPKEEP_S": "1"}
    prepare_home(tmp_path / "w", mode="internet", mdns=False, open=True)
    worker = start_node(tmp_path / "w", env=env)
    boot = f"127.0.0.1:{worker.port}"
    prepare_home(tmp_path / "c", mode="internet", mdns=False, bootstrap=(boot,))
    local = start_node(tmp_path / "c", env=env)
    try:
        r = Client(local.home, mode="daemon").submit(
            HELLO, stdin=b"Hello, World", capabilities={"runtime": "wasmtime"},
            discovery={"via": "dht", "bootstrap": [boot], "discover_timeout_ms": 15000})
        assert r.worker == worker.node_id and r.stdout == b"dlroW ,olleH"
        with pytest.raises(NodeError) as e:
            Client(local.home, mode="daemon").submit(
                HELLO, capabilities={"arch": "riscv64"},
                discovery={"via": "dht", "bootstrap": [boot], "discover_timeout_ms": 3000})
        assert e.value.slug == "unavailable"
    finally:
        local.stop()
        worker.stop()


def test_fence_exit_table_is_plasm_execs():
    from plasm_exec.run import FENCE_EXIT as PLASM_EXEC

    assert FENCE_EXIT == PLASM_EXEC


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=180)


def test_the_examples_run(node_factory, tmp_path):
    worker = node_factory("worker", "--open")
    local = node_factory("local")
    bare = tmp_path / "bare"
    init_home(bare)
    r = run_example(str(EXAMPLES / "submit_local.py"), str(local.home), str(HELLO))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("dlroW ,olleH\nreceipt verified: worker " + local.node_id)
    r = run_example(str(EXAMPLES / "submit_local.py"), str(bare), str(HELLO), "abc")
    assert r.returncode == 0 and r.stdout.startswith("cba\n"), r.stderr
    r = run_example(str(EXAMPLES / "submit_async.py"), str(local.home), str(HELLO),
                    "one", "two", "three")
    assert r.returncode == 0, r.stderr
    assert "one -> eno" in r.stdout and "three -> eerht" in r.stdout
    r = run_example(str(EXAMPLES / "submit_peer.py"), str(bare), str(HELLO), worker.peer)
    assert r.returncode == 0 and r.stdout == "dlroW ,olleH\nreceipt verified\n", r.stderr
    r = run_example(str(EXAMPLES / "placement.py"), str(local.home), str(HELLO),
                    "wasmtime", worker.peer)
    assert r.returncode == 0 and f"ran on {worker.node_id}" in r.stdout, r.stderr


def test_the_examples_and_the_client_api_are_typed():
    files = [*sorted(EXAMPLES.glob("*.py"))] + [
        ROOT / "packages" / "plasmd" / "src" / "plasmd" / f
        for f in ("client.py", "result.py", "clientlocal.py")]
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                        *map(str, files)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:]



@pytest.mark.parametrize("explicit,env", [
    ("/x/h", {"PHASE_HOME": "/p"}), (None, {"PHASE_HOME": "/p", "XDG_DATA_HOME": "/d"}),
    (None, {"XDG_DATA_HOME": "/d"}), (None, {}), ("", {"PHASE_HOME": "/p"})])
def test_the_client_finds_the_home_as_phase_core_does(monkeypatch, explicit, env):
    from phase_core.home import resolve
    from plasmd.clientlocal import home_dir

    for var in ("PHASE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert home_dir(explicit) == str(resolve(explicit))


def test_cancelling_an_async_submit_stops_the_guest_on_the_node(node_factory):
    n = node_factory("node", "--workers=1")
    spin = HELLO.with_name("spin.wasm")

    async def go() -> None:
        running = asyncio.Event()

        def progress(rec: dict[str, object]) -> None:
            if rec.get("stage") == "running":
                running.set()

        task = asyncio.create_task(Client(n.home, mode="daemon").submit_async(
            spin, limits={"wall_ms": 120_000}, on_progress=progress))
        await running.wait()
        task.cancel()  # the client goes away: its connection closes
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    # the only worker slot comes back: the next job runs, and nothing was recorded
    r = Client(n.home, mode="daemon").submit(HELLO, stdin=b"ok")
    assert r.stdout == b"ko"
    st = n.status()
    assert st["counters"]["jobs_cancelled"] == 1 and st["receipts"] == 1


def test_files_the_node_cannot_see_are_sent_as_bytes(tmp_path):
    """A node in its own mount namespace (as systemd's PrivateTmp and ProtectHome
    make it) does not see the caller's files: the client sends their bytes."""
    import shutil

    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello.wasm").write_bytes(HELLO.read_bytes())
    (files / "in.txt").write_bytes(b"Hello, World")
    hide = ("unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs none "{files}" && exec "$@"', "--")
    probe = subprocess.run([*hide, "ls", str(files)], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    assert probe.stdout == ""  # the node's view: an empty directory
    node = start_node(tmp_path / "node", prefix=hide)
    try:
        r = Client(node.home, mode="daemon").submit(files / "hello.wasm",
                                                    stdin=files / "in.txt")
        assert r.stdout == b"dlroW ,olleH" and r.worker == node.node_id

        async def go() -> bytes:
            res = await Client(node.home, mode="daemon").submit_async(
                files / "hello.wasm", stdin=files / "in.txt")
            return res.stdout

        assert asyncio.run(go()) == b"dlroW ,olleH"
    finally:
        node.stop()


def test_a_stdin_named_dev_stdin_is_the_callers_not_the_nodes(node_factory, tmp_path):
    """``stdin="/dev/stdin"`` in a program whose stdin is a file: the daemon must get
    that file's bytes (or its real path), never open its own stdin."""
    import subprocess
    import sys

    n = node_factory("local")
    (tmp_path / "in.txt").write_bytes(b"from the caller")
    code = ("import sys; from plasmd.client import Client; "
            f"r = Client({str(n.home)!r}, mode='daemon').submit({str(HELLO)!r}, "
            "stdin='/dev/stdin'); sys.stdout.buffer.write(r.stdout)")
    with open(tmp_path / "in.txt", "rb") as f:
        r = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                           timeout=120)
    assert (r.returncode, r.stdout) == (0, b"rellac eht morf"), r.stderr[-2000:]
    code = code.replace("'/dev/stdin'", "open('/dev/stdin', 'rb').name")  # same name
    r = subprocess.run([sys.executable, "-c", code], input=b"through a pipe",
                       capture_output=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, b"epip a hguorht"), r.stderr[-2000:]
