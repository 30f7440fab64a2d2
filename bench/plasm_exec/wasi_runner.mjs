// Node's own WASI runner: node wasi_runner.mjs <module.wasm> [args...]; stdio inherited.
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";
import { argv, env } from "node:process";
const wasi = new WASI({ version: "preview1", args: argv.slice(2), env: {}, returnOnExit: true });
const mod = await WebAssembly.compile(readFileSync(argv[2]));
const inst = await WebAssembly.instantiate(mod, wasi.getImportObject());
process.exitCode = wasi.start(inst);
