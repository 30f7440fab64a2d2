from plasm_exec.cli import entry

entry()
