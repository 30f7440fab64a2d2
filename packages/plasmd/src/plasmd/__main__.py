from plasmd.cli import entry

entry()
