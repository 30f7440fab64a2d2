"""plasmd tells systemd when it is ready (Type=notify) and puts its control socket in
systemd's runtime directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from plasmd import sdnotify
from tests.plasmd.conftest import start_node


def _listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(60)
    return s


def test_notify_sends_one_datagram_to_a_path(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _listener(path) as s:
        assert sdnotify.notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path})
        assert s.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_abstract_socket(tmp_path: Path) -> None:
    name = f"phase-test-notify-{os.getpid()}"
    with _listener("\0" + name) as s:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(4096) == b"READY=1"


def test_notify_outside_systemd_sends_nothing() -> None:
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"}) is False


def test_notify_to_a_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_runtime_socket_follows_runtime_directory(tmp_path: Path) -> None:
    assert sdnotify.runtime_socket(tmp_path, {}) is None
    assert sdnotify.runtime_socket(tmp_path, {"RUNTIME_DIRECTORY": "/run/phase:/run/x"}) \
        == Path("/run/phase/plasmd.sock")


def test_daemon_reports_ready_after_listening_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    run = tmp_path / "run"
    run.mkdir()
    with _listener(path) as s:
        node = start_node(tmp_path / "node", env={"NOTIFY_SOCKET": path,
                                                  "RUNTIME_DIRECTORY": str(run)})
        try:
            ready = s.recv(4096).decode()
            assert "READY=1" in ready.splitlines()
            assert f"STATUS=listening on {node.listen}" in ready.splitlines()
            assert f"MAINPID={node.proc.pid}" in ready.splitlines()
            # the control socket lives in the runtime directory; the home links to it
            assert (run / "plasmd.sock").is_socket()
            link = tmp_path / "node" / "plasmd.sock"
            assert link.is_symlink() and Path(os.readlink(link)) == run / "plasmd.sock"
            assert node.started["control"] == str(run / "plasmd.sock")
            assert node.status()["node_id"] == node.node_id
        finally:
            assert node.stop() == 0
        assert s.recv(4096) == b"STOPPING=1"
    assert not (run / "plasmd.sock").exists()
    assert not (tmp_path / "node" / "plasmd.sock").is_symlink()
