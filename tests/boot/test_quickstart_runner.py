"""The quickstart runner (tests/boot/quickstart.py) without QEMU: block extraction, the
port substitution, and the kill of a block's whole process group."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.boot import quickstart


def readme(tmp: Path, body: str) -> Path:
    p = tmp / "README.md"
    p.write_text(f"# x\n\n<!-- boot-quickstart: demo -->\n```sh\n{body}```\n\n"
                 "```sh\nnot this\n```\n")
    return p


def test_block_is_the_fence_after_the_marker(tmp_path: Path) -> None:
    p = readme(tmp_path, "echo one\necho two\n")
    assert quickstart.block("demo", p) == "echo one\necho two\n"
    with pytest.raises(AssertionError, match="no <!-- boot-quickstart: other -->"):
        quickstart.block("other", p)


def test_every_marked_block_of_boot_readme_is_there() -> None:
    for name in ("vm", "secure-boot", "arm64"):
        text = quickstart.block(name)
        assert "--port=8080 &" in text and "qemu-system-" in text, name


def test_port_8080_is_replaced_only_when_taken() -> None:
    script = "serve --port=8080 &\nqemu -append 'phase.provider=http://10.0.2.2:8080'\n"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 8080))
            s.listen()
        except OSError:
            pass  # taken already: the same case
        out, port, subs = quickstart.prepare(script)
    assert port != 8080 and subs and "8080" not in out
    assert f"--port={port} &" in out and f"10.0.2.2:{port}'" in out


def test_the_background_job_dies_with_the_block(tmp_path: Path) -> None:
    # a provider stand-in in the background, the "VM" in the foreground, never ending
    p = readme(tmp_path, f"sleep 300 &\necho $! >{tmp_path}/bg.pid\necho READY\nsleep 300\n")
    r = quickstart.run("demo", tmp_path / "demo.log", until=r"READY", timeout_s=60, readme=p)
    assert r.matched, r.explain()
    assert not r.left_running, r.left_running
    pid = int((tmp_path / "bg.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_block_that_ends_early_still_has_its_group_killed(tmp_path: Path) -> None:
    p = readme(tmp_path, "sleep 300 &\nexit 3\n")
    r = quickstart.run("demo", tmp_path / "demo.log", until=r"never", timeout_s=60, readme=p)
    assert not r.matched and r.exit_code == 3
    assert not r.left_running, r.left_running
