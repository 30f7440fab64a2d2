from phase_fetch.cli import entry

entry()
