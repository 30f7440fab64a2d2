"""The PHP SDK (sdk/php) against phase-core and the real tools.

- its PHPUnit suite passes (with plasm-exec end to end; a skipped PHPUnit test fails);
- its verdict on every file in tests/vectors equals phase-verify's, case by case, with
  the vectors' keyring and with none;
- its canonical encoder gives phase-core's bytes, and refuses what phase-core refuses,
  over the vectors' bodies and a few hundred generated inputs;
- a tampered receipt and a swapped stdout are rejected with phase-core's slugs;
- ProcessTransport runs hello.wasm through plasm-exec, and phase-verify accepts both the
  receipt and the job manifest PHP signed;
- examples/hello.php against a node started with `plasmd start` (LocalTransport).

PHP is a Debian package (.ci/apt-packages.txt): without it these tests fail under CI
(CI=true) and are skipped elsewhere.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from phase_core import canonical
from phase_core.errors import PhaseError
from tests.conftest import ROOT, VECTORS, script

SDK = ROOT / "sdk" / "php"
BIN = SDK / "tests" / "bin"
EXAMPLES = ROOT / "packages" / "plasm-exec" / "examples" / "build"
ALL_VECTORS = sorted(p for d in ("valid", "invalid", "rollback")
                     for p in (VECTORS / d).glob("*.json"))


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed (apt-get install the packages in .ci/apt-packages.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI must run the PHP SDK tests", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def php() -> str:
    path = _require("php")
    mods = subprocess.run([path, "-m"], capture_output=True, text=True, check=True).stdout.split()
    assert "sodium" in mods and "json" in mods, "the PHP SDK needs ext-sodium and ext-json"
    return path


def run_php(php: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([php, *args], input=stdin, capture_output=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def test_phpunit_suite_passes(php: str) -> None:
    phpunit = _require("phpunit")
    r = subprocess.run(
        [phpunit, "-c", str(SDK / "phpunit.xml.dist"), "--fail-on-skipped", "--fail-on-warning",
         "--exclude-group", "local-node"],
        capture_output=True, text=True, timeout=600, cwd=SDK,
        env=dict(os.environ, PHASE_TEST_PLASM_EXEC=script("plasm-exec"),
                 PHASE_TEST_WASM=str(EXAMPLES), PHASE_VECTORS=str(VECTORS)))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "OK (" in r.stdout


# -- verdicts over tests/vectors --------------------------------------------------------

def _phase_verify(paths: list[Path], keys: Path | None, now: str | None = None
                  ) -> dict[str, tuple[str, int]]:
    args = [script("phase-verify"), "--keep-going", *(["--keys", str(keys)] if keys else []),
            *(["--now", now] if now else []), *map(str, paths)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out: dict[str, tuple[str, int]] = {}
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        verdict = "ok" if rec["type"] == "verified" else rec["error"]
        out[rec["source"]] = (verdict, 0 if verdict == "ok" else rec["exit_code"])
    return out


def _php_verify(php: str, paths: list[Path], keys: Path | None, now: str | None = None
                ) -> dict[str, tuple[str, int]]:
    opts = ([f"--keys={keys}"] if keys else []) + ([f"--now={now}"] if now else [])
    r = run_php(php, str(BIN / "verify.php"), *opts, *map(str, paths))
    assert not r.stderr, r.stderr.decode()[-2000:]
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    return {rec["file"]: (rec["verdict"], rec["exit_code"]) for rec in recs}


@pytest.mark.parametrize("keys", [VECTORS / "keyring.toml", None], ids=["keyring", "no-keyring"])
def test_vector_verdicts_equal_phase_verify(php: str, keys: Path | None) -> None:
    assert len(ALL_VECTORS) >= 40
    python = _phase_verify(ALL_VECTORS, keys)
    php_side = _php_verify(php, ALL_VECTORS, keys)
    assert set(python) == set(php_side) == {str(p) for p in ALL_VECTORS}
    differ = {f: (python[f], php_side[f]) for f in python if python[f] != php_side[f]}
    assert not differ, json.dumps(differ, indent=1)
    if keys is not None:  # the verdicts are the ones the file names promise
        for p in ALL_VECTORS:
            want = p.name.split("--")[0] if p.parent.name == "invalid" else "ok"
            assert php_side[str(p)][0] == want, p.name


# -- canonical bytes ------------------------------------------------------------------

def _python_canonical(data: bytes) -> str:
    try:
        return "ok " + base64.b64encode(canonical.canonical(canonical.parse(data))).decode()
    except PhaseError as e:
        return "err " + e.slug


def _php_canonical(php: str, inputs: list[bytes]) -> list[str]:
    lines = b"".join(base64.b64encode(d) + b"\n" for d in inputs)
    r = run_php(php, str(BIN / "canonical.php"), stdin=lines)
    assert r.returncode == 0 and not r.stderr, r.stderr.decode()[-2000:]
    return r.stdout.decode().splitlines()


KEYS = ["", "0", "1", "10", "9", "-1", "01", "A", "_", "a", "Z", "~", "a/b", "\u0000", "\x1f",
        "key with space", "\x7f", "env", "body"]
CHARS = ['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x01", "\x1b", "\x1f", "\x7f",
         "\x80", "é", "\u2028", "\u2029", "\ufeff", "😀", "\U0010ffff", "\ud7ff", "\ue000", "a",
         " ", "<", ">", "&", "'", "\u0085", "\u00a0"]
INTS = [0, 1, -1, 2**53 - 1, -(2**53 - 1), 2**31, -(2**31) - 1, 10**15, 255]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["obj", "arr", "str", "int", "lit"] if depth < 5 else ["str", "int", "lit"])
    if kind == "obj":
        return {rng.choice([*KEYS, f"k{rng.randrange(50)}"]): _value(rng, depth + 1)
                for _ in range(rng.randrange(5))}
    if kind == "arr":
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == "str":
        return "".join(rng.choice(CHARS) for _ in range(rng.randrange(8)))
    if kind == "int":
        return rng.choice([*INTS, rng.randrange(-(2**53) + 1, 2**53)])
    return rng.choice([True, False, None])


def _text(rng: random.Random, value: Any) -> bytes:
    """Non-canonical JSON text of ``value``: escapes, whitespace and key order vary."""
    if rng.random() < 0.5 and isinstance(value, dict):
        value = dict(reversed(list(value.items())))
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 0, 2]),
                      separators=rng.choice([None, (",", ":"), (" , ", " : ")]))
    return text.encode("utf-8")


BAD = [b'{"a":1,"a":2}', b'{"a":1,"\\u0061":2}', b'{"\xc3\xa9":1}', b'{"\\u00e9":1}',
       b'["\\ud800"]', b'["\\udc00"]', b'["\\ud800\\u0041"]', b"\xef\xbb\xbf{}", b'["\xff"]',
       b'["\xed\xa0\x80"]', b'["\xc0\xaf"]', b'["a\x01"]', b'["\\x"]', b"[01]", b"[1,]", b"{} {}",
       b" \n", b"", b'{"a":', b"{'a':1}", b"1.0", b"1e3", b"-0.0", b"NaN", b"-Infinity",
       b"9007199254740992", b"-9007199254740992", b"123456789012345678901234567890",
       b"[" * 33 + b"]" * 33, b"[" * 32 + b"]" * 32, b'{"a":' * 33 + b"1" + b"}" * 33,
       b"\xc2\xa0", b"[1]\x00", b"tru", b'"\\u12"', b'"\\U0041"', b"-", b"[-]", b'{"a" 1}',
       b"+1", b"0x10", b'["\t"]', b"\t[\r\n1 ]\n"]


def test_canonical_bytes_equal_phase_core(php: str) -> None:
    rng = random.Random(20261130)
    inputs = [_text(rng, _value(rng)) for _ in range(400)] + BAD
    for p in ALL_VECTORS:  # every vector whole, and the body of each parseable one
        data = p.read_bytes()
        inputs.append(data)
        try:
            env = json.loads(data)
            inputs.append(json.dumps(env["body"]).encode())
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
    want = [_python_canonical(d) for d in inputs]
    got = _php_canonical(php, inputs)
    assert len(got) == len(inputs)
    differ = [(d[:200], w[:120], g[:120])
              for d, w, g in zip(inputs, want, got, strict=True) if w != g]
    assert not differ, differ[:5]
    assert sum(w.startswith("ok") for w in want) >= 400
    assert sum(w.startswith("err") for w in want) >= 40


# -- receipts: tampering and swapped output ---------------------------------------------

def _receipt_args(tmp_path: Path, stdout: bytes) -> list[str]:
    out = tmp_path / "stdout"
    out.write_bytes(stdout)
    return [f"--keys={VECTORS / 'keyring.toml'}",
            f"--manifest={VECTORS / 'valid' / 'job_manifest.json'}", f"--stdout={out}"]


def test_tampered_receipt_and_swapped_stdout_are_rejected(php: str, tmp_path: Path) -> None:
    from phase_core import documents, receipt
    from phase_core.trust import Keyring

    good = VECTORS / "valid" / "receipt.json"
    r = run_php(php, str(BIN / "verify.php"), *_receipt_args(tmp_path, b"dlroW ,olleH"), str(good))
    assert r.returncode == 0, r.stdout
    # a swapped stdout: the receipt is genuine, the bytes are not the ones it names
    r = run_php(php, str(BIN / "verify.php"), *_receipt_args(tmp_path, b"Hello, World"), str(good))
    assert r.returncode == 1 and json.loads(r.stdout)["verdict"] == "wrong_stdout"
    ring = Keyring.load(VECTORS / "keyring.toml")
    verified = documents.verify(json.loads(good.read_bytes()), documents.Policy(ring, 1795750004))
    man = json.loads((VECTORS / "valid" / "job_manifest.json").read_bytes())
    with pytest.raises(receipt.BindingMismatch) as exc:
        receipt.check_binding(verified.body, job_id=verified.body["job"], manifest_body=man["body"],
                              stdout=b"Hello, World")
    assert exc.value.slug == "wrong_stdout"  # phase-core's slug, the same
    # a tampered receipt: every field change breaks the worker's signature
    for field, value in [("exit_code", 1), ("stdout_bytes", 13), ("fuel_consumed", 1),
                         ("worker", "ab" * 32), ("ended", "trapped")]:
        env = json.loads(good.read_bytes())
        env["body"][field] = value
        bad = tmp_path / f"tampered-{field}.json"
        bad.write_text(json.dumps(env))
        r = run_php(php, str(BIN / "verify.php"), *_receipt_args(tmp_path, b"dlroW ,olleH"),
                    str(bad))
        assert r.returncode == 1 and json.loads(r.stdout)["verdict"] == "bad_signature", field
        assert _phase_verify([bad], VECTORS / "keyring.toml")[str(bad)] == ("bad_signature", 1)


# -- ProcessTransport end to end -----------------------------------------------------------

def test_process_transport_runs_hello_and_phase_verify_accepts_its_documents(
        php: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    stdin = tmp_path / "in.txt"
    stdin.write_bytes(b"Hello, World")
    r = run_php(php, str(BIN / "run.php"), script("plasm-exec"), str(home),
                str(EXAMPLES / "hello.wasm"), str(stdin))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()[-2000:]
    res = json.loads(r.stdout)
    assert base64.b64decode(res["stdout_b64"]) == b"dlroW ,olleH"
    assert res["ended"] == "exited" and res["exit_code"] == 0
    # phase-core accepts the manifest PHP built, canonicalized and signed (with the node
    # key, so the worker is also the submitter here) and the receipt plasm-exec signed
    keyring = tmp_path / "keyring.toml"
    t = subprocess.run([script("phase-key"), "trust", f"--keyring={keyring}", "--name=this-node",
                        "--role=job-submitter", "--role=worker", f"--key={home / 'key'}"],
                       capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr
    docs = {"manifest": res["manifest"], "receipt": res["receipt"]}
    paths = []
    for name, doc in docs.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(doc))
        paths.append(p)
    verdicts = _phase_verify(paths, keyring)
    assert verdicts == {str(p): ("ok", 0) for p in paths}, verdicts
    assert res["receipt"]["body"]["job"] == _document_id(res["manifest"])


def _document_id(env: dict[str, Any]) -> str:
    from phase_core.envelope import document_id
    return document_id(env["type"], env["body"])


# -- against plasmd start (LocalTransport) -------------------------------------------------------

def test_hello_example_against_a_started_node(php: str, node: Any) -> None:
    r = run_php(php, str(SDK / "examples" / "hello.php"), str(EXAMPLES / "hello.wasm"),
                env={"PHASE_HOME": str(node.home)})
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout == b"dlroW ,olleH\nreceipt verified\n"
    assert node.node_id in r.stderr.decode()


def test_local_transport_phpunit_against_a_started_node(php: str, node: Any) -> None:
    phpunit = _require("phpunit")
    r = subprocess.run(
        [phpunit, "-c", str(SDK / "phpunit.xml.dist"), "--fail-on-skipped",
         "--group", "local-node"],
        capture_output=True, text=True, timeout=600, cwd=SDK,
        env=dict(os.environ, PHASE_TEST_NODE_HOME=str(node.home), PHASE_TEST_WASM=str(EXAMPLES)))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "OK (" in r.stdout


# -- the Composer package ---------------------------------------------------------------------

def test_composer_package_is_valid_and_autoloads(php: str, tmp_path: Path) -> None:
    composer = _require("composer")
    pkg = tmp_path / "phase-sdk"
    shutil.copytree(SDK, pkg, ignore=shutil.ignore_patterns("vendor", "composer.lock"))
    manifest = json.loads((pkg / "composer.json").read_text())
    # no other runtime dependency
    assert set(manifest["require"]) == {"php", "ext-json", "ext-sodium"}
    assert manifest["autoload"] == {"psr-4": {"Phase\\": "src/"}}
    env = {"COMPOSER_HOME": str(tmp_path / "composer-home"), "COMPOSER_DISABLE_NETWORK": "1"}
    for args in (["validate", "--strict", "--no-check-publish"], ["dump-autoload"]):
        r = subprocess.run([composer, *args], cwd=pkg, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **env))
        assert r.returncode == 0, r.stdout + r.stderr
    code = ("require 'vendor/autoload.php'; $ring = Phase\\Keyring::load($argv[1]); "
            "echo Phase\\Receipt::fromEnvelope(file_get_contents($argv[2]))->verify($ring, "
            "stdout: 'dlroW ,olleH')->id;")
    r = subprocess.run([php, "-r", code, str(VECTORS / "keyring.toml"),
                        str(VECTORS / "valid" / "receipt.json")], cwd=pkg, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _document_id(json.loads((VECTORS / "valid" / "receipt.json").read_text()))


def test_the_socket_is_found_where_plasmd_puts_it(php: str, tmp_path: Path) -> None:
    from plasmd import control

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    homes = [tmp_path / "real", tmp_path / "link", tmp_path / "link" / "missing" / ".." / "x",
             Path("relative/home")]
    code = ("require $argv[1]; foreach (array_slice($argv, 2) as $h) { echo "
            "bin2hex(Phase\\Home::abstractName($h)), ' ', Phase\\Home::socketPath($h), \"\\n\"; }")
    r = subprocess.run([php, "-r", code, str(SDK / "autoload.php"), *map(str, homes)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = [line.split(" ", 1) for line in r.stdout.splitlines()]
    old = Path.cwd()
    os.chdir(tmp_path)  # a relative home resolves against the caller's directory in both
    try:
        want = [[control.abstract_name(h).encode().hex(), str(control.socket_path(h))]
                for h in homes]
    finally:
        os.chdir(old)
    assert got == want
    env = {k: v for k, v in os.environ.items() if k not in ("PHASE_HOME", "XDG_DATA_HOME")}
    for extra, want_home in [({"PHASE_HOME": "/p/h"}, "/p/h"),
                             ({"XDG_DATA_HOME": "/x"}, "/x/phase"),
                             ({"HOME": "/home/u"}, "/home/u/.local/share/phase")]:
        r = subprocess.run([php, "-r", "require $argv[1]; echo Phase\\Home::resolve();",
                            str(SDK / "autoload.php")], capture_output=True, text=True,
                           timeout=60, env=dict(env, **extra))
        assert r.stdout == want_home
