from phase_verify.cli import entry

entry()
