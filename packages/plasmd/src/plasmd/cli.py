"""The Phase node daemon (plasmd) and its client.

A node accepts WASM jobs from peers over QUIC with a Noise handshake, runs them
under hard limits and returns signed receipts. By default it runs jobs only from
submitters its keyring lists as job-submitter (--open accepts anyone).

Usage:
  plasmd init [--mode=MODE] [--listen=ADDR]... [--open] [--if-missing] [options]
  plasmd start [--mode=MODE] [--listen=ADDR]... [--open] [--workers=N] [options]
  plasmd status [options]
  plasmd submit <module> [<arg>...] [--peer=PEER] [--bootstrap=ADDR]... [--interface=IF]... [--env=KV]... [options]
  plasmd submit --jobs=FILE --peer=PEER [--max-in-flight=N] [options]
  plasmd dispatch [--peer=PEER] [--bootstrap=ADDR]... [--interface=IF]... [--jobs=FILE] [options]
  plasmd receipts [--verify | --repair] [options]
  plasmd boot-sign --kernel=FILE --initramfs=FILE (--key=FILE)... [--mirror=URL]... [options]
  plasmd (-h | --help)
  plasmd --version

Commands:
  init      Create the home: node key (0600), config.toml, an empty keyring.toml.
  start     Run the node in the foreground (JSON logs on stderr; one node_started
            record on stdout). SIGTERM drains running jobs and exits 0; SIGHUP
            reloads keyring.toml and config.toml.
  status    Ask the running node (over its 0600 UNIX socket in the home) for its
            mode, node id, addresses, peers, jobs and cache use. The socket also
            serves programs: the local node API, docs/local-api.md.
  submit    Run <module> on the node --peer names (or, without --peer, on a
            capable node found over mDNS and the DHT, trying the next one when
            a node rejects or fails), verify the receipt, print the guest's
            stdout (stderr to stderr) and exit with the guest's status. When a
            plasmd runs for --home, the job goes to it over the control socket
            (not with --ephemeral-key): it runs the job itself when --peer names
            that node, else its warm connection to the peer carries it.
            With --jobs: run many signed jobs (job records, JSON lines; - for
            stdin) on --peer over one connection, batching them; print one
            job_result record per job as each ends (docs/pipeline.md).
  dispatch  Spread many signed jobs (the input of submit --jobs; default
            stdin) over the --peer nodes, or the nodes discovery finds; print
            one job_result per job as each settles, with its input index.
            Retries elsewhere on timeout, reject or a node that dies. With
            replicas (--replicas=N --quorum=K) it runs each job on N distinct
            nodes and accepts K agreeing outputs, else a disputed record. Disagreeing
            workers go to <home>/dispatch/disagreements.jsonl, signed, and
            later dispatches avoid them (docs/dispatch.md).
  receipts  List the node's receipt log; --verify checks the hash chain (edits,
            reordering, truncation) and every receipt's signature. --repair
            (with no node running on the home) keeps every entry that chains
            from the first, moves the rest to receipts.jsonl.aside-<UTC time>
            and prints one receipts_repaired record.
  boot-sign Sign a boot manifest for a kernel and an initramfs (k-of-n: one --key
            per boot signer), bumping the version past the last one signed, and
            publish it from this home: the artifacts go into the store and the
            manifest to <home>/boot/<channel>/<arch>/manifest.json. A running
            node serves them (over HTTP too, with boot_http in config.toml) and
            advertises them on mDNS and the DHT.

Options:
  --home=DIR            Phase home (default: $PHASE_HOME, else ~/.local/share/phase).
  --mode=MODE           internet, local or private (default: config, else local).
                        private: ephemeral identity, nothing written to disk.
  --listen=ADDR         host:port to listen on (repeatable; port 0 picks one)
                        [default in config: 127.0.0.1:4433].
  --open                Run jobs from any submitter (said in status and logs).
  --workers=N           Threads running guests.
  --if-missing          init: succeed quietly if the home is already set up.
  --peer=PEER           [<node-id>@]<host>:<port>. With a node id the handshake
                        must prove it; without, the id learned is reported.
                        dispatch: several, separated by commas.
  --bootstrap=ADDR      submit without --peer: a DHT node host:port (repeatable).
  --interface=IF        submit without --peer: browse mDNS on this interface
                        (repeatable; default: every up, non-loopback one).
  --via=VIA             submit without --peer: mdns, dht or both [default: both].
  --discover-timeout=D  submit without --peer: how long to look; 5s, 1500ms
                        (a bare number is seconds) [default: 5s].
  --stdin=FILE          The guest's stdin (default: empty).
  --jobs=FILE           submit: job records to run (JSON lines; - for stdin). Each
                        manifest must be signed by this home's node key; module
                        and stdin come from module_path/stdin_path or the store.
  --max-in-flight=N     submit --jobs: jobs queued or running at once [default: 64].
  --replicas=N          dispatch: run each job on N distinct nodes [default: 1].
  --quorum=K            dispatch: receipts that must agree (a majority of N;
                        default N/2+1).
  --distinct-addresses  dispatch: the replicas of a job also run on distinct
                        hosts (not only distinct node ids): IPv4 addresses
                        compared whole, IPv6 by their /64.
  --settle=HOW          dispatch: none, or reexec (re-run a disputed job here;
                        needs --deterministic) [default: none].
  --max-attempts=N      dispatch: placements per job, replicas included
                        (default: N+3).
  --job-timeout=D       dispatch: one attempt's deadline (default: the job's
                        wall-clock limit + 30s).
  --job-deadline=D      dispatch: a job not settled D after it was read fails
                        with `deadline` (exit 75), its attempts listed
                        (default: none; --max-attempts bounds a job).
  --max-per-node=N      dispatch: jobs in flight per node at most (default: 8
                        per core the node advertises, else 16).
  --max-pending=N       dispatch: jobs held at once (read, not yet settled)
                        [default: 256].
  --avoid-after=N       dispatch: skip nodes with N disagreements on record;
                        fewer only lower their priority [default: 3].
  --retry-same-node     dispatch: a retry may go to a node tried before when no
                        other is left (a job it ran is refused as a replay).
  --receipt=FILE        Write the verified receipt here.
  --manifest-out=FILE   Write the signed job manifest here (before submitting), to
                        check the receipt's binding to the job later, offline.
  --env=KV              A guest environment variable NAME=VALUE (repeatable).
  --max-memory=SIZE     Memory limit: 256M, 64KiB, 1048576 [default: 256M].
  --fuel=N              Fuel limit [default: 10000000000].
  --timeout=DURATION    The job's wall-clock limit: 30s, 1500ms, 2m (a bare
                        number is seconds) [default: 30s].
  --max-output=SIZE     stdout+stderr limit [default: 16M].
  --deterministic       Ask for the determinism profile (dispatch: the jobs are
                        deterministic, so a re-run may settle a dispute).
  --json                Print a job_result record instead of the guest's raw stdout.
  --ephemeral-key       Sign with a throw-away key instead of the home's node key.
  --verify              receipts: verify the log and the receipts.
  --repair              receipts: repair a damaged log (nothing is deleted).
  --kernel=FILE         boot-sign: the kernel image.
  --initramfs=FILE      boot-sign: the initramfs.
  --key=FILE            boot-sign: a boot-signer key file (repeatable).
  --cmdline=S           boot-sign: the booted kernel's command line [default: ].
  --channel=C           boot-sign: the boot channel [default: stable].
  --arch=A              boot-sign: x86_64, aarch64 or riscv64 [default: x86_64].
  --mirror=URL          boot-sign: an HTTP mirror the manifest names (repeatable).
  --lifetime=DURATION   boot-sign: how long the manifest stays valid (a bare
                        number is seconds) [default: 720h].
  -q, --quiet           Nothing on stdout; the exit status answers.
  -v, --verbose         More log lines on stderr (-vv for debug).
  --log-format=FMT      json, text or auto (text on a terminal); also PHASE_LOG_FORMAT.
  -h, --help            Show this help.
  --version             Show the version.

Exit status:
  submit --jobs: 0 every job exited 0; else the worst of its jobs (1 a job
    failed, was rejected or did not verify; 75 busy; 65 a bad record ...).
  dispatch: 0 every job exited 0; else the worst of its jobs (1 a job failed,
    was rejected or disputed; 69 no node could run it; 65 a bad record; 130
    interrupted: every job not yet settled gets an interrupted error record).
  submit: the guest's exit code (0-125); when a fence ended the run 134 trapped,
    151 out of fuel, 152 timeout, 153 memory limit, 154 output limit; 1 the job
    was rejected or the receipt did not verify; 69 the node is unreachable;
    75 timed out or the node is busy (queue_full: retry); 76 the node broke
    the protocol.
  start: 0 after a clean drain; 1 the receipt log is damaged (see receipts
    --repair); 66 no key (run plasmd init); 75 another plasmd runs on this
    home (its pid and socket are named); 78 bad config.
  status: 0, or 69 when no node is running.
  receipts --verify: 0 intact; 1 the log was edited, reordered or truncated.
  receipts --repair: 0 repaired (or intact); 75 a node runs on this home.
  Any command: 64 usage, 65 bad input, 70 internal error (a bug), 74 I/O error
  (read-only, full or unwritable home), 78 bad config.toml (names the file and key).
"""

from __future__ import annotations

import sys

from plasmd import __version__

TYPE_CHECKING = False  # a warm submit never imports typing (plasmd.warmsubmit)
if TYPE_CHECKING:
    from typing import Any


def main(args: dict[str, Any]) -> int:
    from plasmd import run

    return run.dispatch(args)


def entry() -> None:
    if sys.argv[1:2] == ["submit"]:  # the common forms skip docopt
        from plasmd import warmsubmit

        code = warmsubmit.main(sys.argv[2:])  # handed to the home's running plasmd
        if code is None:
            from plasmd import submitcmd

            code = submitcmd.fast_main(sys.argv[2:])
        if code is not None:
            warmsubmit.finish(code)
    from phase_core.cli.runner import entry as _entry

    _entry("plasmd", __doc__ or "", __version__, main)
