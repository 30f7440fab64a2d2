"""plasm-exec run / verify / key / job: subprocess for `run` (it uses fds 0-2), in-process else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phase_core import documents, envelope, receipt
from phase_core.canonical import content_id
from phase_core.identity import load
from phase_core.timefmt import now
from phase_core.trust import Keyring
from plasm_exec.cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples" / "build"

PY = sys.executable


def run(args: list[str], stdin: bytes | None = b"", home: Path | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if home is not None:
        env["PHASE_HOME"] = str(home)
    return subprocess.run([PY, "-m", "plasm_exec", *args], input=stdin, capture_output=True,
                          env=env, timeout=120, **kw)


def worker_keyring(home: Path) -> Keyring:
    ident = load(home / "key")
    return Keyring().with_key("w", ident.node_id, ["worker"])


def test_help_does_not_import_wasmtime():
    code = ("import sys\nfrom plasm_exec.cli import cli\nrc = cli(['--help'])\n"
            "assert rc == 0\nprint('wasmtime' in sys.modules)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_usage_error():
    assert cli(["run"]) == 64
    assert cli(["run", "--timeout=x", "m.wasm"]) in (64, 66)


@pytest.mark.parametrize("hello_src", ["examples", "wat"])
def test_run_hello_receipt_verifies(tmp_path, phase_home, write_guest, hello_src):
    if hello_src == "examples":
        mod = EXAMPLES / "hello.wasm"
        if not mod.exists():
            pytest.skip("examples not built")
        text, want = b"Hello, World", b"dlroW ,olleH"
    else:
        mod, text, want = write_guest("cat"), b"Hello, World", b"Hello, World"
    r = tmp_path / "r.json"
    p = run(["run", "--receipt", str(r), str(mod)], stdin=text, home=phase_home)
    assert p.returncode == 0, p.stderr
    assert p.stdout == want
    env = json.loads(r.read_text())
    v = documents.verify(env, documents.Policy(worker_keyring(phase_home), now(),
                                               expected_type=receipt.TYPE))
    assert v.body["stdin"] == content_id(text)
    assert v.body["stdout"] == content_id(want)
    assert v.body["module"] == content_id(mod.read_bytes())
    man = json.loads((tmp_path / "r.manifest.json").read_text())
    assert envelope.document_id(man["type"], man["body"]) == v.body["job"]
    # and it re-executes
    assert cli(["verify", "-q", "--home", str(phase_home), str(r)]) == 0


def test_untrusted_worker_rejected(tmp_path, phase_home, write_guest):
    r = tmp_path / "r.json"
    assert run(["run", "--receipt", str(r), str(write_guest("cat"))], home=phase_home,
               stdin=b"x").returncode == 0
    other = Keyring().with_key("w", "ab" * 32, ["worker"])
    from phase_core.errors import UntrustedSigner
    with pytest.raises(UntrustedSigner):
        documents.verify(json.loads(r.read_text()), documents.Policy(other, now()))


@pytest.mark.parametrize(("guest", "args", "rc"), [
    ("spin", ["--timeout=0.2"], 152),
    ("spin", ["--fuel=100000"], 151),
    ("grow", ["--max-memory=1M"], 153),
    ("bigmem", ["--max-memory=1M"], 153),
    ("flood", ["--max-output=5000"], 154),
    ("unreachable", [], 134),
    ("bad_import", [], 65),
])
def test_run_fence_exit_status(tmp_path, phase_home, write_guest, guest, args, rc):
    r = tmp_path / "r.json"
    p = run(["run", *args, "--receipt", str(r), str(write_guest(guest))], home=phase_home)
    assert p.returncode == rc, p.stderr
    if rc == 65:
        assert not r.exists()
        return
    body = json.loads(r.read_text())["body"]
    assert body["ended"] == {151: "out_of_fuel", 152: "timeout", 153: "memory_limit",
                             154: "output_limit", 134: "trapped"}[rc]
    if rc == 154:
        assert len(p.stdout) == body["stdout_bytes"] == 5000


def test_stdin_blocked_guest_ends_by_wall_clock(phase_home, write_guest):
    # stdin stays open and silent: the pump closes it at the deadline
    proc = subprocess.Popen([PY, "-m", "plasm_exec", "run", "--timeout=0.3",
                             str(write_guest("stdin_spin"))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PHASE_HOME": str(phase_home)})
    try:
        proc.wait(timeout=60)
    finally:
        proc.stdin.close()
        proc.kill()
    assert proc.returncode == 152


def test_guest_args_and_env(tmp_path, phase_home):
    prog = EXAMPLES / "printenv.wasm"
    if not prog.exists():
        pytest.skip("examples not built")
    p = run(["run", "--env=A=1", "--env=B=x y", str(prog)], home=phase_home)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"A=1\nB=x y\n"  # nothing inherited
    p = run(["run", "--env=A=1", str(prog), "--", "A", "--missing"], home=phase_home)
    assert (p.returncode, p.stdout) == (1, b"1\n")


def test_deterministic_runs_and_forged_receipt(tmp_path, phase_home, write_guest):
    mod = write_guest("clockrand")
    bodies = []
    for i in range(2):
        r = tmp_path / f"d{i}.json"
        p = run(["run", "--deterministic", "--receipt", str(r), str(mod)], home=phase_home)
        assert p.returncode == 0, p.stderr
        bodies.append(json.loads(r.read_text())["body"])
    assert bodies[0]["stdout"] == bodies[1]["stdout"]
    assert bodies[0]["fuel_consumed"] == bodies[1]["fuel_consumed"]
    assert bodies[0]["deterministic"] is True
    r0 = tmp_path / "d0.json"
    assert cli(["verify", "-q", "--home", str(phase_home), str(r0)]) == 0
    # forge: change the stdout id and re-sign with the worker's own key
    ident = load(phase_home / "key")
    forged = dict(bodies[0], stdout=content_id(b"something else"))
    fpath = tmp_path / "forged.json"
    fpath.write_text(json.dumps(envelope.sign("receipt", forged, [ident])))
    rc = cli(["verify", "-q", "--home", str(phase_home), "--manifest",
              str(tmp_path / "d0.manifest.json"), str(fpath)])
    assert rc == 1
    # forged without re-signing: the signature fails first
    env = json.loads(r0.read_text())
    env["body"]["fuel_consumed"] += 1
    fpath.write_text(json.dumps(env))
    assert cli(["verify", "-q", "--home", str(phase_home), "--manifest",
                str(tmp_path / "d0.manifest.json"), str(fpath)]) == 1


def test_forged_field_is_named(tmp_path, phase_home, write_guest):
    from phase_core.cas import ContentStore
    from plasm_exec.reexec import ReexecMismatch, verify_receipt
    r = tmp_path / "r.json"
    assert run(["run", "--deterministic", "--receipt", str(r), str(write_guest("cat"))],
               stdin=b"abc", home=phase_home).returncode == 0
    body = json.loads(r.read_text())["body"]
    ident = load(phase_home / "key")
    man = json.loads((tmp_path / "r.manifest.json").read_text())
    cas = ContentStore(phase_home / "cas")
    for field, value in [("stdout", content_id(b"abd")), ("fuel_consumed", 1),
                         ("exit_code", 3)]:
        env = envelope.sign("receipt", dict(body, **{field: value}), [ident])
        with pytest.raises(ReexecMismatch) as ei:
            verify_receipt(env, manifest_obj=man, cas=cas, keyring=worker_keyring(phase_home))
        assert ei.value.details["field"] == field
    ok = verify_receipt(json.loads(r.read_text()), manifest_obj=man, cas=cas)
    assert "fuel_consumed" in ok.checked and not ok.partial


@pytest.mark.parametrize(("field", "value", "slug"), [
    ("job", content_id(b"another job"), "wrong_job"),
    ("module", content_id(b"another module"), "wrong_module"),
    ("stdin", content_id(b"abd"), "wrong_stdin"),
    ("deterministic", False, "wrong_deterministic"),
])
def test_a_receipt_not_bound_to_its_manifest_is_refused_before_rerunning(
        tmp_path, phase_home, write_guest, field, value, slug):
    """The binding check (phase_core.receipt.check_binding) comes before any re-run:
    a genuinely signed receipt for another job, module, stdin or profile is refused."""
    from phase_core.cas import ContentStore
    from phase_core.receipt import BindingMismatch
    from plasm_exec.reexec import verify_receipt
    r = tmp_path / "r.json"
    assert run(["run", "--deterministic", "--receipt", str(r), str(write_guest("cat"))],
               stdin=b"abc", home=phase_home).returncode == 0
    body = json.loads(r.read_text())["body"]
    man = json.loads((tmp_path / "r.manifest.json").read_text())
    env = envelope.sign("receipt", dict(body, **{field: value}), [load(phase_home / "key")])

    class NoRun:
        def load(self, *a: object) -> None:
            raise AssertionError("re-ran a receipt that is not bound to its manifest")

    with pytest.raises(BindingMismatch) as ei:
        verify_receipt(env, manifest_obj=man, cas=ContentStore(phase_home / "cas"),
                       keyring=worker_keyring(phase_home), executor=NoRun())  # type: ignore[arg-type]
    assert ei.value.slug == slug and ei.value.details["field"] == field
    assert ei.value.exit_code == 1


def test_key_prints_keyring_entry(phase_home, capsys):
    assert cli(["key", "--name", "me"]) == 0
    kr = Keyring.parse(capsys.readouterr().out.encode())
    assert kr.allows(load(phase_home / "key").node_id, "worker")


def test_fuel_with_a_non_ascii_digit_is_a_usage_error(write_guest, phase_home):
    # "²".isdigit() is True but int("²") raises: it used to end as an internal error (70)
    assert cli(["run", "--fuel=²", str(write_guest("cat"))]) == 64
