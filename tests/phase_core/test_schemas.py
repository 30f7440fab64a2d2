"""docs/schemas/ agrees with the code: vectors, records and logs validate."""

import json

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from phase_verify import cli
from tests.conftest import ROOT, VECTORS

SCHEMAS = {p.name.split(".")[0]: json.loads(p.read_text())
           for p in (ROOT / "docs" / "schemas").glob("*.schema.json")}
REGISTRY = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


def validator(name):
    Draft202012Validator.check_schema(SCHEMAS[name])
    return Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


@pytest.mark.parametrize("path", sorted((VECTORS / "valid").glob("*.json")), ids=lambda p: p.name)
def test_valid_vectors_match_their_schema(path):
    doc = json.loads(path.read_text())
    validator(path.stem).validate(doc)
    validator("envelope").validate(doc)


SCHEMA_VISIBLE = ["malformed--unknown-body-field", "malformed--unknown-envelope-field",
                  "malformed--uppercase-hex-key", "malformed--key-of-31-bytes",
                  "malformed--no-signatures", "malformed--wrong-field-type-signed",
                  "malformed--body-not-an-object", "malformed--envelope-version-2",
                  "malformed--bad-hex-signature", "too_large--1000-signatures",
                  "wrong_type--unknown-document-type"]


@pytest.mark.parametrize("name", SCHEMA_VISIBLE)
def test_structurally_invalid_vectors_fail_the_schema(name):
    doc = json.loads((VECTORS / "invalid" / f"{name}.json").read_text())
    assert not validator("envelope").is_valid(doc)


def test_rollback_vectors_match_the_schema():
    for p in (VECTORS / "rollback").glob("*.json"):
        validator("boot_manifest").validate(json.loads(p.read_text()))


def test_tool_output_matches_record_schemas(run_tool):
    r = run_tool(cli, ["--keys", str(VECTORS / "keyring.toml"), "--keep-going",
                       str(VECTORS / "valid" / "receipt.json"),
                       str(VECTORS / "invalid" / "expired--job-manifest.json")])
    verified, error = r.records
    validator("verified").validate(verified)
    validator("error").validate(error)
    for line in r.logs:
        validator("log").validate(line)
