"""The last check before kexec: verify a fetched boot manifest again, re-hash its files, kexec.

phase-boot is the last stage of the boot pipeline. It reads JSON-line records
(phase-fetch's output: a "blob" record with the path of each fetched file,
then the "verified" boot_manifest record with its signed "envelope"). For the
newest boot manifest of --channel and --arch it verifies the envelope again
(keyring, boot-signer threshold, validity window, rollback mark in --state),
hashes the kernel and initramfs files again against the ids and sizes the
manifest signs, hands them to kexec_file_load(2) and reboots into them. (A
kernel without kexec_file_load gets kexec_load(2) through kexec-tools, from
sealed copies of the same descriptors.)
Given --load-only it stops after loading; `phase-boot exec` then reboots into
the loaded kernel (so the caller can unmount its disks in between).

Upstream "error" records are passed on to stdout; records of other types are
dropped. If nothing is loaded, the exit status is the worst of phase-boot's own
errors and the upstream errors, so the pipeline's last status says why.

Usage:
  phase-boot exec [-v...]
  phase-boot [options] [-v...] [--log=<path>]... [<file>]
  phase-boot (-h | --help)
  phase-boot --version

Options:
  -h, --help         Show this help.
  --version          Show the version.
  --keys=<path>      The keyring with the boot-signer keys and threshold
                     (default: <home>/keyring.toml).
  --state=<path>     The rollback state file, read only (default:
                     <home>/state.json; a missing file holds no marks).
  --home=<dir>       Phase home (default: $PHASE_HOME, then
                     ~/.local/share/phase).
  --channel=<name>   Boot only a manifest of this channel (default: any).
  --arch=<arch>      Boot only a manifest of this arch (default: this
                     machine's).
  --mode=<mode>      Append phase.mode=<mode> to the kernel command line
                     (internet, local or private).
  --proxy=<url>      With --mode=private: append phase.proxy=<url>
                     (socks5h://IP:PORT, no login), so the next stage keeps
                     private mode over that SOCKS5 proxy.
  --tor              With --mode=private: append phase.tor=1 (the next stage
                     starts its own tor as the proxy).
  --now=<time>       Verify as of this RFC 3339 UTC time (default: the clock).
  --keep=<path>      Once loaded, write the signed manifest to <path>
                     (atomically): the verified cache for the next boot.
  --summary=<path>   Write one plain-text line for a console to <path>: what
                     was loaded, or why nothing was (the deciding error and
                     up to three before it).
  --log=<path>       The JSON log (stderr) of an earlier stage; its errors
                     count in the summary. Repeatable.
  --dry-run          Do everything but the system calls and print a "kexec"
                     record saying what would be loaded.
  --load-only        Load the kernel, print the "kexec" record, do not reboot.
  -q, --quiet        Print nothing on stdout; the exit status answers.
  -v, --verbose      More log lines on stderr (-vv for debug).

Exit status:
  0   loaded (--load-only), or would be (--dry-run); without those
      phase-boot does not return once the kernel is loaded. `exec`: never.
  1   rejected: a bad or untrusted signature, too few signers, expired or not
      yet valid, rolled back, a manifest for another channel or arch, or a
      file that does not hash to the id and size the manifest signs
      (digest_mismatch); or the kernel refused the image (kexec_refused;
      kexec_unsigned: not signed by a key it trusts, under Secure Boot).
  64  usage error.
  65  malformed input (a bad record, or a verified record without its
      envelope).
  66  missing input: no boot manifest in the input, a file it names is
      missing, or no keyring.
  69  `exec`: no kernel is loaded.
  70  internal error (a bug).
  74  I/O error: kexec_file_load (or kexec) or the reboot failed, or --keep
      could not be written.
  78  bad keyring or state file; kexec not permitted on this machine.
  Otherwise the worst upstream error's exit_code, when nothing was loaded.
"""

from __future__ import annotations

from typing import Any

from phase_boot import __version__
from phase_core.cli.runner import entry as _entry
from phase_core.cli.runner import run_cli

TOOL = "phase-boot"
DOC = __doc__ or ""


def main(args: dict[str, Any]) -> int:
    from phase_boot import run

    return run.main(args)


def cli(argv: list[str] | None = None) -> int:
    """Run the tool in-process (tests); returns the exit status."""
    return run_cli(TOOL, DOC, __version__, main, argv)


def entry() -> None:
    _entry(TOOL, DOC, __version__, main)
