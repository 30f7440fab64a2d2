#!/bin/sh
# The main job, end to end, in a throw-away PHASE_HOME that is removed afterwards:
# make a node key and a keyring that trusts it, sign a job manifest for a module,
# verify it with phase-verify and print the verified record.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PHASE_HOME=$(mktemp -d "${TMPDIR:-/tmp}/phase-demo.XXXXXX")
export PHASE_HOME
trap 'rm -rf "$PHASE_HOME"' EXIT INT TERM
step() { printf '\n== %s\n' "$*" >&2; }

MODULE="$ROOT/packages/plasm-exec/examples/build/hello.wasm"
if [ ! -f "$MODULE" ]; then
    MODULE="$PHASE_HOME/module.wasm"
    printf '\000asm\001\000\000\000' > "$MODULE"
fi
printf 'Hello, World' > "$PHASE_HOME/stdin.txt"

step "a throw-away node key in $PHASE_HOME"
phase-key new

step "a keyring that trusts it to submit jobs"
phase-key trust --keyring="$PHASE_HOME/keyring.toml" --name=demo --role=job-submitter

step "sign a job manifest for $(basename "$MODULE") with stdin 'Hello, World'"
phase-key manifest --module="$MODULE" --stdin="$PHASE_HOME/stdin.txt" \
    | phase-key sign > "$PHASE_HOME/job.json"
cat "$PHASE_HOME/job.json"

step "verify it with phase-verify"
phase-verify --keys "$PHASE_HOME/keyring.toml" "$PHASE_HOME/job.json"

step "a tampered copy is rejected (exit 1, bad_signature)"
sed 's/"Hello/"Hellx/; s/"argv":\["/"argv":["x/' "$PHASE_HOME/job.json" > "$PHASE_HOME/tampered.json"
if phase-verify -q --keys "$PHASE_HOME/keyring.toml" "$PHASE_HOME/tampered.json"; then
    echo "demo: the tampered manifest verified; this is a bug" >&2
    exit 1
fi
echo "rejected, as it should be" >&2
