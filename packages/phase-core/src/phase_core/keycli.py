"""Manage Phase keys and sign documents.

Keys live in files (default: $PHASE_HOME/key). Nothing is ever signed with a
key made on the fly: `sign` and `cosign` need an existing key file.

Usage:
  phase-key new [--key=FILE] [options]
  phase-key show [--key=FILE] [options]
  phase-key trust --keyring=FILE --name=NAME (--role=ROLE)... [--key=FILE | --public=HEX] [options]
  phase-key untrust --keyring=FILE (--name=NAME | --public=HEX | --key=FILE) [options]
  phase-key manifest --module=FILE [--stdin=FILE] [--arg=ARG]... [--env=KV]... [options]
  phase-key sign [--type=TYPE] [--key=FILE]... [<body>] [options]
  phase-key cosign [--key=FILE] [<envelope>] [options]
  phase-key (-h | --help)
  phase-key --version

Commands:
  new        Create a new Ed25519 key file (mode 0600); refuses to overwrite.
  show       Print the public key (the node id) and its OpenSSH form.
  trust      Add a public key with roles to a keyring file (created if absent).
             Trusting the same name, key and roles again changes nothing; a
             name or key already listed otherwise is refused (65) unless
             --replace. The file is rewritten as TOML: its leading comment
             block is kept, other comments are not.
  untrust    Remove a key (by name or key) from a keyring; absent is fine.
  manifest   Print an "unsigned" record holding a job-manifest body for a
             module (and stdin) file; pipe it into `sign`.
  sign       Sign a document body (a JSON object, or an "unsigned" record, from
             <body> or stdin) into an envelope.
  cosign     Add this key's signature to an envelope (k-of-n thresholds).

Options:
  --key=FILE        Key file [default: $PHASE_HOME/key].
  --public=HEX      A public key given as 64 hex characters.
  --keyring=FILE    The keyring file to add to.
  --name=NAME       Name of the key in the keyring.
  --role=ROLE       job-submitter, boot-signer or worker (repeatable).
  --replace         trust: overwrite an entry with the same name or key.
  --type=TYPE       job_manifest, receipt, node_record or boot_manifest.
  --module=FILE     The WASM module the job runs.
  --stdin=FILE      The job's stdin.
  --arg=ARG         A guest argument after argv[0] (repeatable).
  --env=KV          A guest environment variable K=V (repeatable).
  --fuel=N          Fuel limit [default: 10000000000].
  --max-memory=SIZE   Memory limit, e.g. 256M, 64KiB, 1048576 [default: 256M].
  --timeout=DURATION  Wall-clock limit, e.g. 30s, 1500ms, 2m; a bare number
                      is seconds [default: 30s].
  --timeout-ms=MS     The same in milliseconds (older spelling; wins if given).
  --max-output=SIZE   stdout+stderr limit [default: 16M].
  --lifetime=DURATION  How long the manifest stays valid; a bare number is
                      seconds [default: 1h].
  --deterministic   Ask for the determinism profile.
  --now=TIME        Creation time (RFC 3339) instead of the clock.
  -q, --quiet       Write nothing to stdout.
  -v, --verbose     More log lines on stderr.
  --log-format=FMT  json, text or auto (text on a terminal); also PHASE_LOG_FORMAT.
  -h, --help        Show this help.
  --version         Show the version.

Exit status:
  0 ok (also: trust or untrust found nothing to change); 64 usage; 65 malformed
  body or envelope, a name or key already in the keyring (duplicate_key), or
  a key that already signed the envelope; 66 missing key or file; 74 I/O
  error (read-only, full or unwritable file system); 78 key file exists, is
  unsafe, or the keyring is bad.

Examples:
  phase-key new --key=alice.key
  phase-key trust --keyring=keyring.toml --name=alice --role=job-submitter --key=alice.key
  phase-key trust --keyring=keyring.toml --name=worker --role=worker   # the node key
  phase-key untrust --keyring=keyring.toml --name=alice
  phase-key manifest --module=hello.wasm --stdin=in.txt > body.json
  phase-key sign --key=alice.key body.json > job.json
  phase-key sign --type=boot_manifest --key=a.key --key=b.key boot-body.json
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from phase_core import __version__
from phase_core.cli.runner import entry as _entry


def _key_path(args: dict[str, Any], value: str | None) -> Path:
    from phase_core import home

    if value and value != "$PHASE_HOME/key":
        return Path(value)
    return home.key_path(home.resolve())


def _read_json(path: str | None) -> Any:
    from phase_core.canonical import parse
    from phase_core.errors import MissingInput

    if path in (None, "-"):
        return parse(sys.stdin.buffer.read((1 << 20) + 1))
    try:
        return parse(Path(str(path)).read_bytes())
    except FileNotFoundError:
        raise MissingInput(f"no such file: {path}") from None


def _emit(args: dict[str, Any], rec: dict[str, Any]) -> None:
    from phase_core.cli.jsonl import write_record

    if not args["--quiet"]:
        write_record(rec)


def main(args: dict[str, Any]) -> int:
    from phase_core import canonical, envelope, identity, manifest, timefmt, trustedit, units
    from phase_core.errors import MissingInput, PhaseError, UsageError
    from phase_core.limits import LIMITS

    keys = args["--key"] if isinstance(args["--key"], list) else [args["--key"]]
    keys = [k for k in keys if k] or [None]
    if args["new"]:
        path = _key_path(args, keys[0])
        ident = identity.create(path)
        _emit(args, {"v": 1, "type": "public_key", "key": ident.node_id, "file": str(path),
                     "openssh": ident.openssh_public()})
    elif args["show"]:
        path = _key_path(args, keys[0])
        ident = identity.load(path)
        _emit(args, {"v": 1, "type": "public_key", "key": ident.node_id, "file": str(path),
                     "openssh": ident.openssh_public()})
    elif args["trust"]:
        if args["--public"]:
            key = identity.check_node_id(args["--public"], "--public")
        else:
            key = identity.load(_key_path(args, keys[0])).node_id
        kr_path = Path(args["--keyring"])
        roles = list(dict.fromkeys(args["--role"]))
        edit = trustedit.trust(kr_path, args["--name"], key, roles,
                               replace=bool(args["--replace"]))
        _emit(args, {"v": 1, "type": "trusted_key", "name": args["--name"], "key": key,
                     "roles": roles, "keyring": str(kr_path), "changed": edit.changed,
                     "action": edit.action})
    elif args["untrust"]:
        kr_path = Path(args["--keyring"])
        gone: str | None = None
        if args["--public"]:
            gone = identity.check_node_id(args["--public"], "--public")
        elif keys[0] and keys[0] != "$PHASE_HOME/key":
            gone = identity.load(_key_path(args, keys[0])).node_id
        edit = trustedit.untrust(kr_path, name=args["--name"], key=gone)
        _emit(args, {"v": 1, "type": "untrusted_key", "names": list(edit.names),
                     "keyring": str(kr_path), "changed": edit.changed})
    elif args["manifest"]:
        now = timefmt.parse_time(args["--now"], "--now") if args["--now"] else timefmt.now()
        try:
            module_id = canonical.content_id(Path(args["--module"]).read_bytes())
            stdin_id = (canonical.content_id(Path(args["--stdin"]).read_bytes())
                        if args["--stdin"] else None)
        except FileNotFoundError as e:
            raise MissingInput(f"no such file: {e.filename}") from None
        env = {}
        for kv in args["--env"]:
            k, sep, v = kv.partition("=")
            if not sep:
                raise UsageError(f"--env takes K=V, got {kv!r}")
            env[k] = v
        fuel = str(args["--fuel"])
        if not re.fullmatch(r"[0-9]{1,20}", fuel) or int(fuel) < 1:
            raise UsageError(f"--fuel must be a positive integer, got {fuel!r}")
        wall_ms = (units.parse_duration(args["--timeout-ms"], "--timeout-ms", bare="ms")
                   if args["--timeout-ms"] else
                   units.parse_duration(args["--timeout"], "--timeout", bare="s"))
        limits = {"fuel": int(fuel),
                  "memory_bytes": units.parse_size(args["--max-memory"], "--max-memory"),
                  "wall_ms": wall_ms,
                  "output_bytes": units.parse_size(args["--max-output"], "--max-output",
                                                   allow_zero=True)}
        try:
            LIMITS(limits, "limits")
        except PhaseError as e:
            raise UsageError(f"bad limit: {e.message}") from None
        lifetime = units.parse_duration(args["--lifetime"], "--lifetime", bare="s") // 1000
        if lifetime < 1:
            raise UsageError("--lifetime must be at least one second")
        body = manifest.build(module=module_id, stdin=stdin_id, now=now,
                              argv=[Path(args["--module"]).name, *args["--arg"]], env=env,
                              limits=limits, deterministic=bool(args["--deterministic"]),
                              lifetime_s=lifetime)
        _emit(args, {"v": 1, "type": "unsigned", "doc_type": manifest.TYPE, "body": body})
    elif args["sign"]:
        body = _read_json(args["<body>"])
        if not isinstance(body, dict):
            raise UsageError("a document body is a JSON object")
        doc_type = args["--type"]
        if body.get("type") == "unsigned" and isinstance(body.get("body"), dict):
            doc_type = doc_type or body.get("doc_type")
            body = body["body"]
        if doc_type not in envelope.DOC_TYPES:
            raise UsageError(f"--type must be one of {', '.join(envelope.DOC_TYPES)}")
        signers = [identity.load(_key_path(args, k)) for k in keys]
        env_obj = envelope.sign(str(doc_type), body, signers)
        _emit(args, env_obj)
    elif args["cosign"]:
        env_obj = _read_json(args["<envelope>"])
        signer = identity.load(_key_path(args, keys[0]))
        _emit(args, envelope.add_signature(env_obj, signer))
    return 0


def entry() -> None:
    _entry("phase-key", __doc__ or "", __version__, main)
