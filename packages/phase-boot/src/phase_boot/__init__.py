"""phase-boot: the last check before kexec (re-verify, re-hash, kexec_file_load)."""

__version__ = "0.1.0"
