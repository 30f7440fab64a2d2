"""On a LAN (two network namespaces joined by a veth pair, made by the test), a node
advertises itself on mDNS and `plasmd submit` without --peer finds it and returns a
verified receipt."""

import json

from phase_core import documents, receipt, timefmt
from phase_core.trust import Keyring
from tests.conftest import script
from tests.netns import Net
from tests.plasmd.conftest import HELLO, init_home, prepare_home, start_node


def test_submit_without_peer_finds_a_node_on_the_lan(net: Net, tmp_path):
    home = tmp_path / "worker"
    worker_id = prepare_home(home, mode="local", open=True, listen=("10.201.1.1:0",))
    w = start_node(home, prefix=("ip", "netns", "exec", net.ns["a"]))
    try:
        assert w.status()["mdns_interfaces"] == ["10.201.1.1"]
        client = tmp_path / "client"
        init_home(client)
        stdin = tmp_path / "in.txt"
        stdin.write_text("Hello, World")
        r = net.run("b", script("plasmd"), "submit", f"--home={client}", str(HELLO),
                    f"--stdin={stdin}", "--via=mdns", f"--interface=pd{net.tag}a1",
                    "--discover-timeout=3", f"--receipt={tmp_path / 'r.json'}", timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout == "dlroW ,olleH"
        env = json.loads((tmp_path / "r.json").read_text())
        kr = Keyring().with_key("w", worker_id, ["worker"])
        v = documents.verify(env, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
        assert v.body["worker"] == worker_id
        assert w.status()["jobs"]["done"] == 1
    finally:
        w.stop()


def test_nothing_on_the_lan_is_a_clear_unavailable(net: Net, tmp_path):
    client = tmp_path / "client"
    init_home(client)
    r = net.run("b", script("plasmd"), "submit", f"--home={client}", str(HELLO), "--via=mdns",
                f"--interface=pd{net.tag}a1", "--discover-timeout=1", timeout=60)
    assert r.returncode == 69, r.stderr[-2000:]
    assert "no node accepted the job" in r.stderr
