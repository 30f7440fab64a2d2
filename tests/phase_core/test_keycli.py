import json
import subprocess

from phase_core import keycli
from phase_verify import cli as verify_cli
from tests.conftest import script


def test_new_show_trust_manifest_sign_cosign_verify(run_tool, tmp_path, phase_home):
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    ra = run_tool(keycli, ["new", f"--key={a}"], tool="phase-key")
    assert ra.code == 0
    key_a = ra.records[0]["key"]
    assert ra.records[0]["openssh"].startswith("ssh-ed25519 ")
    assert run_tool(keycli, ["new", f"--key={a}"], tool="phase-key").code == 78
    assert run_tool(keycli, ["show", f"--key={a}"], tool="phase-key").records[0]["key"] == key_a
    run_tool(keycli, ["new", f"--key={b}"], tool="phase-key")
    kr = tmp_path / "keyring.toml"
    for k, name in ((a, "a"), (b, "b")):
        r = run_tool(keycli, ["trust", f"--keyring={kr}", f"--name={name}",
                              "--role=job-submitter", "--role=boot-signer", f"--key={k}"],
                     tool="phase-key")
        assert r.code == 0, r.err
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\1\0\0\0")
    body = run_tool(keycli, ["manifest", f"--module={module}", "--arg=x", "--env=A=1"],
                    tool="phase-key").out.encode()
    signed = run_tool(keycli, ["sign", f"--key={a}"], stdin=body, tool="phase-key")
    assert signed.code == 0, signed.err
    env = signed.records[0]
    assert env["type"] == "job_manifest" and env["body"]["argv"] == ["m.wasm", "x"]
    r = run_tool(verify_cli, ["--keys", str(kr)], stdin=signed.out.encode())
    assert r.code == 0 and r.records[0]["signers"] == ["a"]
    # k-of-n: a boot-signer threshold of 2 needs the co-signature
    kr.write_text("[thresholds]\njob-submitter = 2\n" + kr.read_text())
    assert run_tool(verify_cli, ["--keys", str(kr)], stdin=signed.out.encode()).code == 1
    co = run_tool(keycli, ["cosign", f"--key={b}"], stdin=signed.out.encode(), tool="phase-key")
    r = run_tool(verify_cli, ["--keys", str(kr)], stdin=co.out.encode())
    assert r.code == 0 and r.records[0]["signers"] == ["a", "b"]


def test_sign_never_creates_a_key(run_tool, phase_home):
    r = run_tool(keycli, ["sign", "--type=job_manifest"], stdin=b"{}", tool="phase-key")
    assert r.code == 66
    assert not (phase_home / "key").exists()


def test_trust_refuses_to_break_the_keyring(run_tool, tmp_path):
    kr = tmp_path / "k.toml"
    pub = "ab" * 32
    assert run_tool(keycli, ["trust", f"--keyring={kr}", "--name=x", "--role=worker",
                             f"--public={pub}"], tool="phase-key").code == 0
    before = kr.read_bytes()
    r = run_tool(keycli, ["trust", f"--keyring={kr}", "--name=y", "--role=worker",
                          f"--public={pub}"], tool="phase-key")
    assert r.code == 65 and kr.read_bytes() == before  # the key is already listed as x
    assert r.logs[-1]["error"] == "duplicate_key"


def test_phase_key_console_script():
    r = subprocess.run([script("phase-key"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage:" in r.stdout
    r = subprocess.run([script("phase-key"), "sign", "--type=nope", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 66
    assert json.loads(r.stderr.splitlines()[-1])["error"] == "missing_input"
