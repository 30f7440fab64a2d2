from phase_discover.cli import entry

entry()
