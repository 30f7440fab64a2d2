"""The local node API's ``receipts`` and ``verify_receipt`` (docs/local-api.md)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any

from phase_core.errors import PhaseError
from plasmd import localreq as rq

MAX_LIST = 1000
Send = Callable[..., None]


def _list(node: Any, after: int | None, limit: int, verify: bool) -> list[dict[str, Any]]:
    from phase_core import documents, receipt, timefmt
    from phase_core.trust import Keyring

    kr = Keyring().with_key("self", node.identity.node_id, [receipt.ROLE]) if verify else None
    out: list[dict[str, Any]] = []
    for entry in node.receipts.entries():
        if after is not None and entry.seq <= after:
            continue
        if len(out) > limit:  # one more than asked: says whether there is more
            break
        rec: dict[str, Any] = {"type": "receipt_entry", "seq": entry.seq, "hash": entry.hash}
        if kr is not None:
            v = documents.verify(entry.receipt, documents.Policy(
                kr, timefmt.now(), expected_type=receipt.TYPE))
            rec["id"], rec["verified"] = v.id, True
        body = entry.receipt.get("body", {})
        for k in ("job", "ended", "exit_code", "completed"):
            rec[k] = body.get(k)
        rec["envelope"] = entry.receipt
        out.append(rec)
    return out


async def receipts(node: Any, req: dict[str, Any], rid: str | None, send: Send) -> None:
    try:
        rq.only(req, frozenset({"v", "type", "req", "after", "limit", "verify"}), "receipts")
        after = rq.integer(req["after"], "after", 0, 1 << 53) if "after" in req else None
        limit = rq.integer(req.get("limit", 100), "limit", 1, MAX_LIST)
        verify = rq.boolean(req.get("verify", False), "verify")
        got = await asyncio.to_thread(_list, node, after, limit, verify)
    except PhaseError as e:
        send({"type": "error", **e.to_record()}, rid)
        return
    more = len(got) > limit
    got = got[:limit]
    for rec in got:
        send(rec, rid)
    send({"type": "receipts_end", "count": len(got),
          "last": got[-1]["seq"] if got else None, "more": more}, rid)


def _b64(req: dict[str, Any], key: str) -> bytes | None:
    if key not in req:
        return None
    try:
        return base64.b64decode(rq.string(req[key], key, 1 << 26), validate=True)
    except (binascii.Error, ValueError):
        raise rq.bad(f"{key} is not base64") from None


def check(node: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Verify a receipt as ``verify_receipt`` asks; the ``verified`` record."""
    from phase_core import documents, envelope, receipt, timefmt
    from phase_core.identity import check_node_id
    from phase_core.trust import Keyring

    rq.only(req, frozenset({"v", "type", "req", "envelope", "stdout_b64", "stderr_b64",
                            "manifest", "workers"}), "verify_receipt")
    if "workers" in req:
        kr = Keyring()
        for i, w in enumerate(rq.strings(req["workers"], "workers")):
            kr = kr.with_key(f"worker-{i}", check_node_id(w, "workers"), [receipt.ROLE])
    else:
        kr = node.keyring.with_key("this-node", node.identity.node_id, [receipt.ROLE])
    v = documents.verify(req.get("envelope"), documents.Policy(
        kr, timefmt.now(), expected_type=receipt.TYPE))
    stdout, stderr = _b64(req, "stdout_b64"), _b64(req, "stderr_b64")
    if "manifest" in req:
        m = envelope.parse(req["manifest"])
        receipt.check_binding(v.body, job_id=m.id, manifest_body=m.body,
                              stdout=stdout, stderr=stderr)
    else:
        from phase_core.canonical import content_id
        from phase_core.receipt import BindingMismatch

        for name, data in (("stdout", stdout), ("stderr", stderr)):
            if data is not None and (v.body[name], v.body[f"{name}_bytes"]) != (
                    content_id(data), len(data)):
                raise BindingMismatch(f"the receipt's {name} is not the bytes given",
                                      slug=f"wrong_{name}")
    return v.record()


async def verify_receipt(node: Any, req: dict[str, Any], rid: str | None,
                         send: Send) -> None:
    try:
        rec = await asyncio.to_thread(check, node, req)
    except PhaseError as e:
        send({"type": "error", **e.to_record()}, rid)
        return
    send(rec, rid)
