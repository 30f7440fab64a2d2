"""phase-verify --reexec: re-run a receipt's job through plasm-exec."""

import json
import subprocess

from phase_core import envelope, identity
from phase_verify import cli
from tests.conftest import ROOT, script

HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"


def make_receipt(tmp_path, phase_home):
    r = subprocess.run([script("plasm-exec"), "run", "--receipt", str(tmp_path / "r.json"),
                        str(HELLO)], input=b"Hello, World", capture_output=True)
    assert r.returncode == 0 and r.stdout == b"dlroW ,olleH", r.stderr
    kr = tmp_path / "kr.toml"
    kr.write_bytes(subprocess.run([script("plasm-exec"), "key"], capture_output=True,
                                  check=True).stdout)
    return tmp_path / "r.json", kr


def test_reexec_passes_for_an_honest_receipt(run_tool, tmp_path, phase_home):
    receipt, kr = make_receipt(tmp_path, phase_home)
    r = run_tool(cli, ["--keys", str(kr), "--reexec", str(receipt)])
    assert r.code == 0, r.err
    assert "stdout" in r.records[0]["reexecuted"]["checked"]


def test_reexec_names_the_forged_field(run_tool, tmp_path, phase_home):
    receipt, kr = make_receipt(tmp_path, phase_home)
    env = json.loads(receipt.read_text())
    body = dict(env["body"], stdout="sha256:" + "0" * 64)
    worker = identity.load(phase_home / "key")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(envelope.sign("receipt", body, [worker])))
    # the signature is genuine (the worker re-signed a lie); only re-execution catches it
    assert run_tool(cli, ["--keys", str(kr), str(forged)]).code == 0
    r = run_tool(cli, ["--keys", str(kr), "--reexec", "--manifest",
                       str(tmp_path / "r.manifest.json"), str(forged)])
    assert r.code == 1 and "reexec_mismatch" in r.error_slugs
    assert any(log.get("field") == "stdout" for log in r.logs)


def test_reexec_without_manifest_is_missing_input(run_tool, tmp_path, phase_home):
    receipt, kr = make_receipt(tmp_path, phase_home)
    (tmp_path / "r.manifest.json").unlink()
    r = run_tool(cli, ["--keys", str(kr), "--reexec", str(receipt)])
    assert r.code == 66


def test_reexec_of_many_receipts_leaves_no_thread_behind(run_tool, tmp_path, phase_home):
    import threading

    def tickers() -> int:
        return sum(t.name == "plasm-epoch" for t in threading.enumerate())

    receipt, kr = make_receipt(tmp_path, phase_home)
    before = tickers()
    r = run_tool(cli, ["--keys", str(kr), "--reexec", *[str(receipt)] * 4])
    assert r.code == 0, r.err
    assert len(r.records) == 4 and all(
        "stdout" in rec["reexecuted"]["checked"] for rec in r.records)
    # one engine and one epoch ticker for the process, not one per receipt
    assert tickers() <= max(before, 1)
