from phase_boot.cli import entry

entry()
