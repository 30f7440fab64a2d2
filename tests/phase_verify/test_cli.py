import json

from phase_verify import cli
from tests.conftest import VECTORS

KEYS = ["--keys", str(VECTORS / "keyring.toml")]


def lines(*names):
    out = b""
    for n in names:
        out += json.dumps(json.loads((VECTORS / n).read_text())).encode() + b"\n"
    return out


def test_stdin_json_lines_bare_and_wrapped(run_tool):
    wrapped = {"v": 1, "type": "boot_offer", "provider": "x",
               "envelope": json.loads((VECTORS / "valid/boot_manifest.json").read_text())}
    data = lines("valid/job_manifest.json") + b"\n" + json.dumps(wrapped).encode() + b"\n"
    data += b'{"v":1,"type":"unrelated_record"}\n'
    r = run_tool(cli, KEYS, stdin=data)
    assert r.code == 0, r.err
    assert [x["doc_type"] for x in r.records] == ["job_manifest", "boot_manifest"]


def test_stops_at_first_rejection_without_keep_going(run_tool):
    data = lines("invalid/expired--job-manifest.json", "valid/job_manifest.json")
    r = run_tool(cli, KEYS, stdin=data)
    assert r.code == 1
    [err] = r.records  # the rejection travels on; the valid one after it is not read
    assert err["type"] == "error" and err["error"] == "expired" and err["exit_code"] == 1


def test_keep_going_writes_error_records_and_worst_status(run_tool):
    data = lines("invalid/expired--job-manifest.json", "valid/job_manifest.json")
    data += b'{"v":1,"type":"job_manifest","body":{},"signatures":[],"x":1.5}\n'
    r = run_tool(cli, [*KEYS, "--keep-going"], stdin=data)
    assert [x["type"] for x in r.records] == ["error", "verified", "error"]
    assert r.records[0]["error"] == "expired" and r.records[2]["error"] == "malformed"
    assert r.code == 65


def test_quiet_prints_nothing(run_tool):
    r = run_tool(cli, [*KEYS, "-q", str(VECTORS / "valid/job_manifest.json")])
    assert r.code == 0 and r.out == ""


def test_missing_file_keyring_and_empty_input(run_tool, tmp_path):
    r = run_tool(cli, [*KEYS, str(tmp_path / "nope.json")])
    assert r.code == 66
    r = run_tool(cli, ["--keys", str(tmp_path / "nokeys.toml"), "x"])
    assert r.code == 66
    assert run_tool(cli, KEYS, stdin=b"").code == 66
    bad = tmp_path / "bad.toml"
    bad.write_text("[keys.a]\nkey = 1\n")
    assert run_tool(cli, ["--keys", str(bad), "x"]).code == 78


def test_usage_errors(run_tool):
    assert run_tool(cli, ["--bogus"]).code == 64
    assert run_tool(cli, [*KEYS, "--role", "king", "x"]).code == 64
    assert run_tool(cli, [*KEYS, "--threshold", "zero", "x"]).code == 64
    assert run_tool(cli, [*KEYS, "--now", "yesterday", "x"]).code == 65


def test_help_documents_every_exit_status(run_tool):
    r = run_tool(cli, ["--help"])
    assert r.code == 0
    for code in ("0 ", "1 ", "64", "65", "66", "70", "74", "78", "130", "141"):
        assert f"  {code}" in r.out
    for slug in ("bad_signature", "untrusted_signer", "threshold", "expired", "not_yet_valid",
                 "rollback", "wrong_type", "malformed", "too_large"):
        assert slug in r.out


def test_node_record_needs_no_keyring(run_tool):
    r = run_tool(cli, [str(VECTORS / "valid/node_record.json")])
    assert r.code == 0
    r = run_tool(cli, [str(VECTORS / "valid/job_manifest.json")])
    assert r.code == 1 and "untrusted_signer" in r.error_slugs


def test_hostile_strings_cannot_forge_log_lines(run_tool, tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"v":1,"type":"evil\\n{\\"level\\":\\"info\\"}","body":{},"signatures":[]}')
    r = run_tool(cli, [*KEYS, str(p)])
    assert r.code == 65
    assert all(line.startswith("{") for line in r.err.splitlines())
    assert len(r.logs) == len(r.err.splitlines())


def test_broken_pipe_exits_141_quietly():
    import subprocess

    from tests.conftest import script

    doc = str(VECTORS / "valid/boot_manifest.json")
    p = subprocess.Popen([script("phase-verify"), *KEYS, *[doc] * 200],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err
