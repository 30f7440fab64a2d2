"""A one-shot ``plasmd submit`` leaves promptly (docs/performance.md, "Cold and local
submit"): the hand-parsed command line means what docopt's would, the import set
stays small on the cold and the warm path, the connection is closed without the
closing period, and ending with os._exit loses no output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from phase_core import documents, receipt, timefmt
from phase_core.aio.quic import Client as QuicClient
from phase_core.aio.quic import listen
from phase_core.aio.stream import Limits
from phase_core.cli.runner import parse_args
from phase_core.identity import Identity
from phase_core.trust import Keyring
from plasm_exec.run import limits_from_args
from plasmd import cli, submitcmd
from tests.conftest import BROKEN_MODULE, script
from tests.plasmd.conftest import HELLO, init_home

LINES = [
    ["hello.wasm"],
    ["hello.wasm", "a", "b", "--peer=ab:1", "--stdin=in.txt", "--json", "-q"],
    ["--home=/h", "hello.wasm", "--receipt=r.json", "--manifest-out=m.json", "-vv",
     "--env=A=1", "--env=B=2", "--timeout=2s", "--fuel=99", "--max-memory=1M",
     "--max-output=1K", "--deterministic", "--ephemeral-key"],
    ["x.wasm", "--peer=" + "a" * 64 + "@127.0.0.1:4433", "-v", "--verbose"],
]
NOT_FAST = [
    ["hello.wasm", "--bootstrap=1.2.3.4:5"], ["hello.wasm", "--via=dht"],
    ["--", "hello.wasm"], ["-h"], ["hello.wasm", "--peer"], ["hello.wasm", "--nope"],
    ["hello.wasm", "--peer=a:1", "--peer=b:2"], [],
]
KEYS = ["--home", "--peer", "--stdin", "--receipt", "--manifest-out", "--env", "--json",
        "--deterministic", "--ephemeral-key", "--quiet", "--verbose", "--via",
        "--bootstrap", "--interface", "--discover-timeout", "<module>", "<arg>"]


@pytest.mark.parametrize("argv", LINES, ids=lambda a: " ".join(a)[:40])
def test_the_fast_parse_means_what_docopt_says(argv):
    fast = submitcmd.fast_args(argv)
    slow = parse_args(cli.__doc__ or "", ["submit", *argv], "0")
    assert fast is not None and isinstance(slow, dict)
    assert {k: fast[k] for k in KEYS} == {k: slow[k] for k in KEYS}
    assert limits_from_args(fast) == limits_from_args(slow)


@pytest.mark.parametrize("argv", NOT_FAST, ids=lambda a: " ".join(a)[:40] or "empty")
def test_anything_else_goes_to_docopt(argv):
    assert submitcmd.fast_args(argv) is None


PROBE = """
import json, sys
from plasmd import submitcmd
code = submitcmd.fast_main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
# what a submit must not pull in; and how many modules it may load at most
COLD_NEVER = {"docopt", "wasmtime", "plasm_exec.api", "plasm_exec.engine", "plasmd.run",
              "plasmd.node", "plasmd.daemon", "plasmd.receiptlog", "plasmd.config",
              "phase_fetch", "phase_discover", "zeroconf", "phase_core.aio.dht"}
WARM_NEVER = COLD_NEVER | {"asyncio", "aioquic", "cryptography", "nacl", "noise",
                           "phase_core.documents", "phase_core.aio", "plasm_exec",
                           "concurrent", "ssl", "dataclasses", "plasmd.submit", "pathlib"}
COLD_BUDGET = 420
WARM_BUDGET = 92


def probe(*argv: str) -> tuple[int, set[str]]:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                       text=True, timeout=120)
    last = json.loads(r.stderr.strip().splitlines()[-1])
    return last["code"], set(last["modules"])


def top(mods: set[str], names: set[str]) -> set[str]:
    return {m for m in mods if m in names or m.split(".")[0] in names}


def test_the_import_set_of_submit_stays_small(node_factory, tmp_path):
    worker = node_factory("worker", "--open")
    local = node_factory("local")
    (tmp_path / "in.txt").write_bytes(b"Hello, World")
    cold = tmp_path / "cold"
    init_home(cold)
    common = [str(HELLO), f"--stdin={tmp_path / 'in.txt'}", f"--peer={worker.peer}", "-q"]
    code, mods = probe(f"--home={cold}", *common)
    assert code == 0
    assert top(mods, COLD_NEVER) == set()
    assert len(mods) <= COLD_BUDGET, len(mods)
    code, mods = probe(f"--home={local.home}", *common)  # handed to the running node
    assert code == 0  # no asyncio, no aioquic: the running node carried the job
    assert top(mods, WARM_NEVER) == set(), sorted(top(mods, WARM_NEVER))
    assert len(mods) <= WARM_BUDGET, len(mods)
    assert worker.status()["jobs"]["done"] == 2


def test_prompt_close_sends_connection_close_and_does_not_wait():
    """The server hears the close at once, though its idle timeout is ten minutes."""

    async def go() -> None:
        server = await listen("127.0.0.1", 0, Identity.generate(), lambda p, s: None,
                              Limits(idle_timeout_s=600))
        try:
            conn = await QuicClient(Identity.generate(), Limits(idle_timeout_s=600)).connect(
                "127.0.0.1", server.port)
            while server.connection_count != 1 or not server.peers():
                await asyncio.sleep(0.01)
            conn.close_now()  # not a coroutine: nothing is waited for
            assert conn.closed and conn._transport.is_closing()
            async with asyncio.timeout(120):  # a hang guard, far below the idle timeout
                while server.connection_count:
                    await asyncio.sleep(0.01)
        finally:
            await server.close()

    asyncio.run(go())


def _verify(rec_env: dict, worker: str, stdin: bytes, stdout: bytes) -> None:
    kr = Keyring().with_key("w", worker, [receipt.ROLE])
    v = documents.verify(rec_env, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
    from phase_core.canonical import content_id

    assert v.body["stdin"] == content_id(stdin) and v.body["stdout"] == content_id(stdout)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_leaving_with_os_exit_loses_nothing(node_factory, tmp_path, warm):
    """Megabytes of guest output through a pipe and into a file, the receipt file and
    the --json record: all complete although the process skips its teardown."""
    worker = node_factory("worker", "--open")
    home = node_factory("local").home if warm else tmp_path / "cold"
    if not warm:
        init_home(home)
    data = bytes(range(32, 127)) * ((3 << 20) // 95)  # ~3 MiB of ASCII
    (tmp_path / "in.bin").write_bytes(data)
    base = [script("plasmd"), "submit", f"--home={home}", str(HELLO),
            f"--stdin={tmp_path / 'in.bin'}", f"--peer={worker.peer}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    r = subprocess.run([*base, f"--receipt={tmp_path / 'r.json'}"], capture_output=True,
                       timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == data[::-1]
    _verify(json.loads((tmp_path / "r.json").read_text()), worker.node_id, data, r.stdout)
    with open(tmp_path / "out.bin", "wb") as f:  # a file: block-buffered stdout
        r = subprocess.run(base, stdout=f, stderr=subprocess.PIPE, timeout=180, env=env)
    assert r.returncode == 0 and (tmp_path / "out.bin").read_bytes() == data[::-1]
    r = subprocess.run([*base, "--json"], capture_output=True, timeout=180, env=env)
    rec = json.loads(r.stdout)
    import base64

    assert base64.b64decode(rec["stdout_b64"]) == data[::-1]
    _verify(rec["envelope"], worker.node_id, data, data[::-1])
    assert worker.status()["counters"].get("jobs_orphaned", 0) == 0
    # stdin from a pipe, not a file: read once by the command, sent as bytes
    r = subprocess.run([*base[:-2], "--stdin=/dev/stdin", f"--peer={worker.peer}"],
                       input=b"Hello, World", capture_output=True, timeout=180, env=env)
    assert (r.returncode, r.stdout) == (0, b"dlroW ,olleH"), r.stderr[-2000:]
    # and the module from a pipe
    r = subprocess.run([*base[:3], "/dev/stdin", f"--peer={worker.peer}"],
                       input=HELLO.read_bytes(), capture_output=True, timeout=180, env=env)
    assert (r.returncode, r.stdout) == (0, b""), r.stderr[-2000:]



@pytest.mark.parametrize("warm", [False, True], ids=["no daemon", "through the home's node"])
def test_a_file_that_is_not_a_module_is_refused_before_anything_is_sent(node_factory,
                                                                         tmp_path, warm):
    """A wrong file (WAT text, a native binary) as the module: the same clear local
    error, exit 65 with a hint, whether a plasmd runs for the home or not; the worker
    never hears of it (it used to answer "the worker could not run the job", exit 1)."""
    worker = node_factory("worker", "--open")
    home = node_factory("local").home if warm else tmp_path / "cold"
    if not warm:
        init_home(home)
    (tmp_path / "x.wat").write_text("(module)\n")
    for module in (tmp_path / "x.wat", "/bin/true"):
        r = subprocess.run([script("plasmd"), "submit", f"--home={home}", str(module),
                            f"--peer={worker.peer}"], capture_output=True, timeout=120)
        assert r.returncode == 65, r.stderr[-2000:]
        err = json.loads(r.stderr.strip().splitlines()[-1])
        assert err["error"] == "bad_module" and "compiled .wasm" in err["hint"], err
    st = worker.status()
    assert st["jobs"]["done"] == 0 and st["connections"] == 0
    assert st["transport"].get("connections_authenticated", 0) == 0, st["transport"]


@pytest.mark.parametrize("warm", [False, True], ids=["no daemon", "through the home's node"])
def test_a_module_the_worker_cannot_compile_exits_65_as_a_local_run_would(node_factory,
                                                                          tmp_path, warm):
    """A module with a WASM header whose body is broken gets past the local check, so
    the worker is the one to refuse it (``bad_module``). The submitter says so as
    ``plasm-exec run`` would: exit 65 with a hint, not exit 1 (the worker's fault)."""
    worker = node_factory("worker", "--open")
    home = node_factory("local").home if warm else tmp_path / "cold"
    if not warm:
        init_home(home)
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(BROKEN_MODULE)
    r = subprocess.run([script("plasmd"), "submit", f"--home={home}", str(broken),
                        f"--peer={worker.peer}"], capture_output=True, timeout=120)
    assert r.returncode == 65, r.stderr[-2000:]
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert err["error"] == "bad_module" and "plasm-exec" in err["hint"], err
    assert "the worker could not run the job" in err["message"], err
    assert worker.status()["counters"].get("jobs_failed", 0) == 1


def test_a_worker_saying_bad_module_is_still_only_that_workers_refusal():
    """The 65 is for the user's eyes; to the search for a node and to a dispatcher it
    stays one worker's refusal (another node is tried), so a lying worker cannot
    condemn a job. Other failures keep exit 1, passing refusals 75."""
    from phase_core.protocol.jobs_client import Failed, Refused
    from plasmd import dispatchsched as ds
    from plasmd.dispatchnodes import classify
    from plasmd.placement import _skippable
    from plasmd.submit import JobRejected, ModuleRefused, answer_error

    e = answer_error(Failed("bad_module", "cannot compile"))
    assert isinstance(e, ModuleRefused) and isinstance(e, JobRejected)
    assert (e.exit_code, e.slug) == (65, "bad_module") and "plasm-exec" in (e.hint or "")
    assert classify(e) == ds.REFUSED and _skippable(e)
    other = answer_error(Failed("io_error", "the worker's disk"))
    assert type(other) is JobRejected and other.exit_code == 1
    busy = answer_error(Refused("queue_full", "later", "offer"))
    assert busy.exit_code == 75 and classify(busy) == ds.BUSY
