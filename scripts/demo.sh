#!/bin/sh
# The main job, end to end, in throw-away homes that are removed afterwards:
# start a worker node on loopback, submit hello.wasm to it over QUIC/Noise from a
# second identity, print the guest's output and the verified receipt, stop the node.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/phase-demo.XXXXXX")
WORKER="$TMP/worker"
CLIENT="$TMP/client"
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
step() { printf '\n== %s\n' "$*" >&2; }
HELLO="$ROOT/packages/plasm-exec/examples/build/hello.wasm"

step "a worker node and a client, each with its own key"
plasmd init -q --home="$WORKER" --listen=127.0.0.1:0
plasmd init -q --home="$CLIENT"
CLIENT_KEY=$(phase-key show --key="$CLIENT/key" | sed 's/.*"key":"\([0-9a-f]*\)".*/\1/')
phase-key trust -q --keyring="$WORKER/keyring.toml" --name=demo-client \
    --role=job-submitter --public="$CLIENT_KEY"
echo "the worker trusts the client ($CLIENT_KEY) to submit jobs" >&2

step "start the worker on loopback"
mkfifo "$TMP/started"
plasmd start --home="$WORKER" > "$TMP/started" 2> "$TMP/worker.log" &
PID=$!
read -r STARTED < "$TMP/started"
echo "$STARTED"
NODE=$(echo "$STARTED" | sed 's/.*"node_id":"\([0-9a-f]*\)".*/\1/')
PORT=$(echo "$STARTED" | sed 's/.*quic:\/\/127\.0\.0\.1:\([0-9]*\)".*/\1/')

step "submit hello.wasm with stdin 'Hello, World' to $NODE"
printf 'Hello, World' > "$TMP/stdin.txt"
plasmd submit --home="$CLIENT" "$HELLO" --stdin="$TMP/stdin.txt" \
    --peer="$NODE@127.0.0.1:$PORT" --receipt="$TMP/receipt.json"
echo  # the guest writes no trailing newline; end its line before the next record

step "the receipt, verified offline with phase-verify"
phase-key trust -q --keyring="$TMP/trust.toml" --name=worker --role=worker --public="$NODE"
phase-verify --keys "$TMP/trust.toml" "$TMP/receipt.json"

step "the worker's status, then a clean stop"
plasmd status --home="$WORKER"
kill -TERM "$PID"
wait "$PID"
PID=""
echo "stopped" >&2
