"""Every tool, run for real, prints only records that match docs/schemas/.

World.sh checks each stdout line against its type's schema (tests/records.py);
this test makes sure each record type is actually printed at least once, by
running a representative command of every tool.
"""

from __future__ import annotations

import json

from tests.pipeline.conftest import World, main_pipeline
from tests.records import NOT_RECORDS, SCHEMAS, check_record

# record types no command here prints, and why (a gap, not a pass)
NOT_PRINTED_HERE = {
    "boot": "phase-discover boot: tests/pipeline/test_boot_chain.py (a provider in a netns)",
    "boot_provider": "phase-discover boot: needs a node that provides boot, found by mDNS/DHT",
    "receipt": "a bare receipt envelope: plasm-exec run --receipt writes it to a file",
    "node_record": "a bare node record envelope: travels inside node records and the DHT",
    "boot_manifest": "a bare boot manifest envelope: plasmd boot-sign",
    "kexec": "phase-boot: tests/phase_boot, and the boot chains of tests/pipeline",
    "disputed": "plasmd dispatch with a lying worker (PHASE_TEST_LIAR=1, test-only): "
                "tests/dispatch/test_dispatch_cli.py checks its stdout against the schemas",
    **{t: "the local node API's answers on plasmd's control socket, not a tool's stdout: "
          "tests/plasmd/test_local_api.py checks each against its schema"
       for t in ("job_accepted", "job_progress", "cancelled", "receipts_end")},
}


def test_every_tool_prints_only_schema_valid_records(world: World, tmp_path):
    seen: set[str] = set()

    def sh(code: str, status: int = 0) -> list[dict]:
        r = world.sh(code)  # every stdout line is validated here
        assert r.code == status, (code, r.err[-2000:])
        seen.update(r.types)
        return r.records

    sh("phase-key show --key=me.key")
    sh("phase-key trust --keyring=other.toml --name=w --role=worker --key=me.key")
    sh("phase-key untrust --keyring=other.toml --name=w")
    sh("phase-key manifest --module=hello.wasm --stdin=in.txt")
    sh("phase-key manifest --module=hello.wasm | phase-key sign --key=me.key")
    sh(main_pipeline().code)
    sh("phase-verify --keys keyring.toml job.json | phase-fetch --keys keyring.toml "
       "--from-dir=blobs | plasm-exec job --keys keyring.toml")
    fetch = {"v": 1, "type": "fetch", "id": "sha256:" + world.blob_path("in.txt").name,
             "name": "stdin"}
    check_record(fetch, "a fetch request")
    sh(f"echo '{json.dumps(fetch)}' | phase-fetch --from-dir=blobs")
    for cmd in ("size", "list", "verify", "gc 100000000000"):
        sh(f"phase-fetch cas {cmd}")
    sh("phase-verify --keys keyring.toml --keep-going job.json keyring.toml", status=65)
    sh("printf 'Hello, World' | plasm-exec run --receipt r.json hello.wasm > /dev/null"
       " && plasm-exec verify r.json")
    job = {"v": 1, "type": "job", "manifest": json.loads((world.dir / "job.json").read_text()),
           "module_path": "hello.wasm", "stdin_path": "in.txt"}
    check_record(job, "a job request")
    sh(f"echo '{json.dumps(job)}' | plasm-exec job")

    # plasmd and phase-discover: one node on 127.0.0.1, found through its own DHT
    from tests.plasmd.conftest import prepare_home, start_node

    sh(f"plasmd init --home={tmp_path / 'fresh'} --listen=127.0.0.1:0")
    prepare_home(tmp_path / "node", mode="internet", mdns=False, open=True)
    node = start_node(tmp_path / "node")
    try:
        check_record(node.started, "plasmd start")
        seen.add("node_started")
        sh(f"plasmd status --home={tmp_path / 'node'}")
        # plasmd submit --json speaks the contract: its job_result goes straight into
        # phase-verify, which checks the receipt under `envelope`
        sh(f"plasmd init -q --home={tmp_path / 'client'}")
        sh(f"phase-key trust -q --keyring=workers.toml --name=node --role=worker "
           f"--public={node.node_id}")
        out = sh(f"plasmd submit --home={tmp_path / 'client'} --peer={node.peer} "
                 f"--stdin=in.txt --json hello.wasm | phase-verify --keys workers.toml")
        assert [r["type"] for r in out] == ["verified"] and out[0]["doc_type"] == "receipt"
        sh(f"plasmd receipts --home={tmp_path / 'node'} --verify")
        sh(f"phase-discover nodes --via=dht --bootstrap=127.0.0.1:{node.port} --limit=1"
           " --timeout=20")
    finally:
        node.stop()

    records = {name for name in SCHEMAS if name not in NOT_RECORDS}
    missing = records - seen - set(NOT_PRINTED_HERE) - {"fetch", "job"}
    assert missing == set(), f"record types with a schema that no command printed: {missing}"
