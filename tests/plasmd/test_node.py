"""plasmd end to end: real processes on loopback."""

import json
import os
import signal
import stat
import subprocess
import time

from phase_core import documents, receipt, timefmt
from phase_core.trust import Keyring
from tests.conftest import script
from tests.plasmd.conftest import EXAMPLES, HELLO, submit


def test_remote_hello_returns_a_verified_receipt(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    r = submit(tmp_path / "client", w.peer, HELLO, "--receipt", str(tmp_path / "r.json"),
               stdin=b"Hello, World", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"dlroW ,olleH"
    env = json.loads((tmp_path / "r.json").read_text())
    kr = Keyring().with_key("w", w.node_id, ["worker"])
    v = documents.verify(env, documents.Policy(kr, timefmt.now(), expected_type=receipt.TYPE))
    assert v.body["stdout"] == "sha256:" + __import__("hashlib").sha256(b"dlroW ,olleH").hexdigest()
    assert v.body["worker"] == w.node_id
    st = w.status()
    assert st["jobs"]["done"] == 1 and st["mode"] == "local" and st["open"] is True


def test_a_saved_manifest_checks_the_receipts_binding_offline(node_factory, tmp_path):
    """``--manifest-out`` keeps the signed job manifest: with it, anyone can check
    offline that a remote receipt is for that job, its module and stdin."""
    import pytest

    from phase_core import envelope
    from phase_core.receipt import BindingMismatch, check_binding

    w = node_factory("worker", "--open")
    done = []
    for name, data in (("a", b"first"), ("b", b"second")):
        r = submit(tmp_path / "client", w.peer, HELLO, f"--receipt={tmp_path / name}.json",
                   f"--manifest-out={tmp_path / name}.manifest.json", stdin=data,
                   tmp=tmp_path)
        assert r.returncode == 0, r.stderr
        rec = json.loads((tmp_path / f"{name}.json").read_text())
        man = json.loads((tmp_path / f"{name}.manifest.json").read_text())
        done.append((rec, man))
    kr = Keyring().with_key("w", w.node_id, ["worker"])
    for rec, man in done:  # no network from here on
        v = documents.verify(rec, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
        check_binding(v.body, job_id=envelope.parse(man).id, manifest_body=man["body"],
                      worker=w.node_id)
        assert man["signatures"][0]["key"] != w.node_id  # signed by the submitter
    (rec_a, _), (_, man_b) = done
    with pytest.raises(BindingMismatch) as ei:  # a's receipt is not b's job
        check_binding(rec_a["body"], job_id=envelope.parse(man_b).id,
                      manifest_body=man_b["body"])
    assert ei.value.slug == "wrong_job"
    # the command line: phase-verify re-executes with the manifest saved beside the receipt
    r = subprocess.run([script("phase-verify"), f"--keys={_worker_keys(tmp_path, w)}",
                        "--reexec", f"--home={w.home}", str(tmp_path / "a.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "stdout" in json.loads(r.stdout.splitlines()[0])["reexecuted"]["checked"]
    r = subprocess.run([script("phase-verify"), f"--keys={_worker_keys(tmp_path, w)}",
                        "--reexec", f"--home={w.home}", f"--manifest={tmp_path}/b.manifest.json",
                        str(tmp_path / "a.json")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and '"error": "wrong_job"' in r.stderr, r.stderr


def _worker_keys(tmp_path, w):
    kr = tmp_path / "workers.toml"
    kr.write_text(f'[keys.w]\nkey = "{w.node_id}"\nroles = ["worker"]\n')
    return kr


def test_default_deny_rejects_before_fetching_or_running(node_factory, tmp_path):
    w = node_factory("worker")
    r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"x", tmp=tmp_path)
    assert r.returncode == 1
    assert b"not_authorized" in r.stderr
    c = w.status()["counters"]
    assert c.get("wasm_runs", 0) == 0 and c.get("blobs_fetched", 0) == 0
    assert c["unauthorized"] == 1


def test_keyring_allows_and_sighup_reloads(node_factory, tmp_path):
    w = node_factory("worker")
    client = tmp_path / "client"
    assert submit(client, w.peer, HELLO, stdin=b"ab", tmp=tmp_path).returncode == 1
    r = subprocess.run([script("phase-key"), "trust", f"--keyring={w.home / 'keyring.toml'}",
                        "--name=client", "--role=job-submitter", f"--key={client / 'key'}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not any(e.get("event") == "node.reloaded" for e in w.logs()):
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.05)
    r = submit(client, w.peer, HELLO, stdin=b"ab", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ba"


def test_wrong_node_id_is_refused_and_nothing_runs(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    other = "ab" * 32
    r = submit(tmp_path / "client", f"{other}@127.0.0.1:{w.port}", HELLO, stdin=b"x",
               tmp=tmp_path)
    assert r.returncode not in (0, 70), r.stderr
    assert w.status()["counters"].get("wasm_runs", 0) == 0


def test_guest_exit_codes_and_fences_come_back(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    r = submit(client, w.peer, EXAMPLES / "exit.wasm", "42")
    assert r.returncode == 42, r.stderr
    r = submit(client, w.peer, EXAMPLES / "spin.wasm", "--fuel=1000000")
    assert r.returncode == 151, r.stderr
    r = submit(client, w.peer, EXAMPLES / "spin.wasm", "--timeout=0.5")
    assert r.returncode == 152, r.stderr
    r = submit(client, w.peer, EXAMPLES / "trap.wasm")
    assert r.returncode == 134, r.stderr
    r = submit(client, w.peer, HELLO, stdin=b"still fine", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"enif llits"


def spin_running(w, client, seconds: str, *extra: str) -> subprocess.Popen[bytes]:
    """Submit spin.wasm (ended by its wall clock) and wait until the worker runs it."""
    from tests.plasmd.conftest import init_home
    init_home(client)
    job = subprocess.Popen([script("plasmd"), "submit", f"--home={client}",
                            str(EXAMPLES / "spin.wasm"), f"--peer={w.peer}",
                            f"--timeout={seconds}", *extra],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while w.status()["jobs"]["running"] == 0:
        assert time.monotonic() < deadline, "the spin job never started"
        time.sleep(0.05)
    return job


def reconfigure(w, old: str, new: str) -> None:
    """Edit one line of the worker's config.toml and wait until SIGHUP reloaded it."""
    path = w.home / "config.toml"
    text = path.read_text()
    assert old in text, f"config.toml has no {old!r}"
    path.write_text(text.replace(old, new))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not any(e.get("event") == "node.reloaded" for e in w.logs()):
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.05)


def test_queue_full_is_a_temporary_failure(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=1")
    reconfigure(w, "queue = 64", "queue = 0")
    client = tmp_path / "client"
    slow = spin_running(w, client, "3")
    r = submit(client, w.peer, HELLO, stdin=b"x", tmp=tmp_path)
    assert r.returncode == 75 and b"queue_full" in r.stderr
    assert slow.wait(60) == 152


def test_a_submitter_that_goes_away_stops_its_guest(node_factory, tmp_path):
    """The worker stops the guest when the submitter's connection ends mid-job: the
    slot frees long before the job's own 30 s wall clock, nothing is recorded."""
    w = node_factory("worker", "--open", "--workers=1")
    # fuel for far longer than the submitter's 10 s idle timeout (the default ceiling
    # burns in about 8 s here): only the wall clock or the cancel can end the guest
    reconfigure(w, "fuel = 10000000000", "fuel = 1000000000000")
    job = spin_running(w, tmp_path / "client", "30", "--fuel=1000000000000")
    job.kill()  # no goodbye: the worker notices by the connection's idle timeout
    job.wait(10)
    deadline = time.monotonic() + 60  # a bound for a broken worker, not a measure
    ended = ("jobs_cancelled", "jobs_done", "jobs_failed", "jobs_orphaned")
    # the slot frees a moment before the job's end is counted: wait for both
    while (st := w.status())["jobs"]["running"] != 0 or \
            not any(k in st["counters"] for k in ended):
        assert time.monotonic() < deadline, "the guest still runs"
        time.sleep(0.1)
    c = st["counters"]
    assert c.get("jobs_cancelled") == 1 and c.get("jobs_done", 0) == 0, st
    assert st["receipts"] == 0 and "ended_timeout" not in c
    assert any(e.get("event") == "job.cancelled" for e in w.logs())
    # the node goes on serving
    r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"next", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"txen", r.stderr


def test_sigterm_drains_running_jobs(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    job = spin_running(w, client, "2")
    w.signal(signal.SIGTERM)
    assert job.wait(60) == 152  # the job finished (by its own fence) and came back verified
    assert w.proc.wait(60) == 0
    assert not (w.home / "plasmd.sock").exists()


def test_status_socket_is_private(node_factory):
    w = node_factory("worker")
    mode = stat.S_IMODE(os.stat(w.home / "plasmd.sock").st_mode)
    assert mode == 0o600


def test_status_without_a_node_is_unavailable(tmp_path):
    r = subprocess.run([script("plasmd"), "status", f"--home={tmp_path}"], capture_output=True)
    assert r.returncode == 69


def test_private_mode_writes_nothing_to_the_home(node_factory, tmp_path):
    from tests.plasmd.conftest import init_home
    home = tmp_path / "priv"
    init_home(home)
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*")}
    w = node_factory("priv", "--open", "--mode=private")
    assert w.started["mode"] == "private"
    r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"abc", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"cba"
    assert w.node_id != json.loads((home / "key").read_text())["key"]  # ephemeral identity
    st = w.status()
    assert st["mode"] == "private" and st["receipts"] == 1
    w.stop()
    after = {p: p.stat().st_mtime_ns for p in home.rglob("*")}
    assert after == before
    assert not os.path.exists(w.started["home"])  # the tmpfs home is gone


def test_receipt_log_verifies_after_jobs(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    for data in (b"one", b"two"):
        assert submit(tmp_path / "client", w.peer, HELLO, stdin=data, tmp=tmp_path).returncode == 0
    r = subprocess.run([script("plasmd"), "receipts", "--verify", f"--home={w.home}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["seq"] for x in recs] == [0, 1] and all(x["verified"] for x in recs)
    lines = (w.home / "receipts.jsonl").read_text().splitlines(keepends=True)
    (w.home / "receipts.jsonl").write_text(lines[1] + lines[0])
    r = subprocess.run([script("plasmd"), "receipts", "--verify", f"--home={w.home}"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "receipt_log_tampered" in r.stderr


def test_local_mode_refuses_public_listen_address(tmp_path):
    from tests.plasmd.conftest import init_home
    home = tmp_path / "n"
    init_home(home)
    r = subprocess.run([script("plasmd"), "start", f"--home={home}", "--listen=8.8.8.8:4433"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "LAN" in r.stderr


def test_start_without_init_says_what_to_do(tmp_path):
    r = subprocess.run([script("plasmd"), "start", f"--home={tmp_path / 'none'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 66 and "plasmd init" in r.stderr
