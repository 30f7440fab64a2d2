"""Assemble the Phase Boot initramfs tree (run by boot/build on the host).

busybox + Debian's python3.11 (interpreter, trimmed stdlib, and the ELF library
closure of the interpreter, every extension module and every wheel's shared object,
resolved inside the unpacked Debian packages only) + the phase tools' site-packages
+ the kernel modules /init loads (dependency closure from modprobe --show-depends)
+ /init and its helpers + the baked keyring + Debian's tor (phase.tor=1) with its
library closure, left out with a log line if that closure is incomplete.

Usage: mkroot.py --config=FILE   (a JSON file written by boot/build; see main())
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

STDLIB_DROP = {"test", "idlelib", "tkinter", "lib2to3", "ensurepip", "turtledemo",
               "pydoc_data", "distutils", "venv", "unittest", "turtle.py", "__phello__"}
DYNLOAD_OPTIONAL = re.compile(r"_(dbm|gdbm|tkinter|curses|curses_panel|nis|test\w*|xxtestfuzz)"
                              r"\.|xxlimited|_ctypes_test|readline")


def log(msg: str) -> None:
    print(f"mkroot: {msg}", file=sys.stderr)


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)


def needed(path: Path) -> tuple[list[str], list[str]]:
    """(NEEDED sonames, RUNPATH/RPATH entries) of an ELF file, via readelf."""
    out = subprocess.run(["readelf", "-d", "-W", str(path)], capture_output=True,
                         text=True, check=False).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    paths = []
    for m in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]+)\]", out):
        paths += m.split(":")
    return libs, paths


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


class Closure:
    def __init__(self, root: Path, search: list[Path], libdir: str) -> None:
        self.root = root
        self.search = search
        self.libdir = libdir  # e.g. usr/lib/x86_64-linux-gnu
        self.have: set[str] = set()

    def resolve(self, soname: str, origin: Path, rpaths: list[str]) -> Path | None:
        for rp in rpaths:
            cand = Path(rp.replace("$ORIGIN", str(origin))) / soname
            if cand.exists():
                return cand
        for d in self.search:
            cand = d / soname
            if cand.exists():
                return cand
        return None

    def add(self, elf: Path) -> list[str]:
        """Copy every library ``elf`` needs (recursively); return unresolved sonames."""
        missing: list[str] = []
        todo = [elf]
        while todo:
            f = todo.pop()
            libs, rpaths = needed(f)
            for so in libs:
                if so in self.have:
                    continue
                src = self.resolve(so, f.parent, rpaths)
                if src is None:
                    missing.append(so)
                    continue
                if str(src).startswith(str(self.root)):
                    self.have.add(so)  # bundled next to the wheel's module
                    todo.append(src.resolve())
                    continue
                dst = self.root / self.libdir / so
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.resolve(), dst)
                self.have.add(so)
                todo.append(dst)
        return missing


def busybox(root: Path, bb: Path, applets: list[str]) -> None:
    dst = root / "usr/bin/busybox"
    copy(bb, dst)
    for a in applets:
        name = a.rsplit("/", 1)[-1]
        sub = "usr/sbin" if "sbin" in a else "usr/bin"
        link = root / sub / name
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/usr/bin/busybox", link)


def python(root: Path, debs: list[Path], pyver: str) -> Path:
    """Copy the interpreter and the trimmed stdlib; return the interpreter's path."""
    for d in debs:
        for sub in (f"usr/bin/python{pyver}",):
            if (d / sub).exists():
                copy(d / sub, root / sub)
        std = d / f"usr/lib/python{pyver}"
        if std.is_dir():
            for src in std.rglob("*"):
                rel = src.relative_to(std)
                if rel.parts and (rel.parts[0] in STDLIB_DROP
                                  or rel.parts[0].startswith("config-")):
                    continue
                if "__pycache__" in rel.parts or src.is_dir():
                    continue
                copy(src, root / f"usr/lib/python{pyver}" / rel)
        etc = d / f"etc/python{pyver}"
        if etc.is_dir():
            for src in etc.rglob("*"):
                if src.is_file():
                    copy(src, root / f"etc/python{pyver}" / src.relative_to(etc))
    os.symlink(f"python{pyver}", root / "usr/bin/python3")
    return root / f"usr/bin/python{pyver}"


def modules(root: Path, kdir: Path, kver: str, names: list[str]) -> list[str]:
    """Copy the named modules and their dependencies; return the load order."""
    order: list[str] = []
    moddir = kdir / "lib/modules" / kver
    for name in names:
        r = subprocess.run(["modprobe", "-d", str(kdir), "-S", kver, "--show-depends", name],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            log(f"module {name}: not in this kernel, skipped")
            continue
        for line in r.stdout.splitlines():
            m = re.match(r"insmod (\S+)", line)
            if not m:
                continue  # builtin
            ko = Path(m.group(1))
            rel = str(ko.relative_to(moddir) if ko.is_absolute() and str(ko).startswith(
                str(moddir)) else ko.resolve().relative_to(moddir.resolve()))
            if rel not in order:
                order.append(rel)
                copy(moddir / rel, root / "usr/lib/modules" / kver / rel)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (moddir / f).exists():
            copy(moddir / f, root / "usr/lib/modules" / kver / f)
    return order


def wrappers(root: Path, site: Path, pyver: str) -> list[str]:
    """A /usr/bin script for every console_scripts entry point of the installed wheels."""
    made = []
    for ep in sorted(site.glob("*.dist-info/entry_points.txt")):
        section = None
        for line in ep.read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "console_scripts" or "=" not in line:
                continue
            name, target = (x.strip() for x in line.split("=", 1))
            mod, _, func = target.partition(":")
            script = root / "usr/bin" / name
            if script.is_symlink():
                script.unlink()
            script.write_text(f"#!/usr/bin/python{pyver} -Es\nimport sys\nfrom {mod} import "
                              f"{func}\nsys.exit({func}())\n")
            script.chmod(0o755)
            made.append(name)
    return made


def add_tor(root: Path, tor: Path, clo: Closure) -> None:
    """tor for private mode over Tor; optional: without it /init stops on phase.tor=1."""
    dst = root / "usr/bin/tor"
    copy(tor, dst)
    miss = clo.add(dst)
    if miss:
        dst.unlink()
        log(f"tor left out: it needs {', '.join(miss)}, which no package provides")
    else:
        log("tor: added (phase.tor=1)")


def add_kexec(root: Path, kexec: Path, clo: Closure) -> bool:
    """kexec-tools for kernels without kexec_file_load (aarch64); required when asked."""
    dst = root / "usr/sbin/kexec"
    copy(kexec, dst)
    miss = clo.add(dst)
    if miss:
        log(f"kexec needs {', '.join(miss)}, which no package provides")
        return False
    log("kexec: added (kexec_load fallback)")
    return True


def main() -> int:
    cfg = json.loads(Path(sys.argv[1].split("=", 1)[1]).read_text())
    root = Path(cfg["root"])
    if root.exists():
        shutil.rmtree(root)
    for d in ("dev", "proc", "sys", "run", "tmp", "cache", "root", "mnt", "var", "etc/phase",
              "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/share/phase"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):
        os.symlink(target, root / link)
    (root / "tmp").chmod(0o1777)
    with __import__("contextlib").suppress(OSError):
        os.mknod(root / "dev/console", 0o600 | 0o020000, os.makedev(5, 1))

    busybox(root, Path(cfg["busybox"]), cfg["applets"])
    pyver = cfg["pyver"]
    interp = python(root, [Path(p) for p in cfg["python_debs"]], pyver)

    site = root / "usr/lib/python3/dist-packages"
    shutil.copytree(cfg["site"], site, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "bin"))
    tools = wrappers(root, site, pyver)

    # the ELF closure, resolved only inside the unpacked Debian packages
    multiarch = cfg["multiarch"]
    search = []
    for d in cfg["lib_debs"] + cfg["python_debs"]:
        for sub in (f"lib/{multiarch}", f"usr/lib/{multiarch}"):
            if (Path(d) / sub).is_dir():
                search.append(Path(d) / sub)
    clo = Closure(root, search, f"usr/lib/{multiarch}")
    ldso = cfg["ldso"]  # e.g. ld-linux-x86-64.so.2
    (root / f"usr/lib/{multiarch}").mkdir(parents=True, exist_ok=True)
    for d in cfg["lib_debs"]:
        for sub in (f"lib/{multiarch}/{ldso}", f"usr/lib/{multiarch}/{ldso}"):
            if (Path(d) / sub).exists():
                shutil.copy2((Path(d) / sub).resolve(), root / f"usr/lib/{multiarch}/{ldso}")
    interp_dir = cfg["interp_dir"]  # lib64 (x86_64) or lib (aarch64)
    if interp_dir != "lib":
        os.symlink(f"../lib/{multiarch}/{ldso}", root / "usr" / interp_dir / ldso)
    else:
        os.symlink(f"{multiarch}/{ldso}", root / "usr/lib" / ldso)
    clo.have.add(ldso)
    missing = clo.add(interp)
    if missing:
        log(f"the interpreter needs {missing}, which no package provides")
        return 1
    dropped = []
    for so in sorted((root / f"usr/lib/python{pyver}/lib-dynload").glob("*.so")):
        if DYNLOAD_OPTIONAL.search(so.name):
            so.unlink()
            dropped.append(so.name)
            continue
        miss = clo.add(so)
        if miss:
            so.unlink()
            dropped.append(f"{so.name} (needs {', '.join(miss)})")
    for so in sorted(site.rglob("*.so*")):
        if is_elf(so):
            miss = clo.add(so)
            if miss:
                log(f"{so.relative_to(root)} needs {miss}, which no package provides")
                return 1
    log(f"dropped optional stdlib modules: {', '.join(dropped) or 'none'}")
    if cfg.get("tor"):
        add_tor(root, Path(cfg["tor"]), clo)
    if cfg.get("kexec") and not add_kexec(root, Path(cfg["kexec"]), clo):
        return 1

    (root / "etc/ld.so.conf").write_text(f"/usr/lib/{multiarch}\n")
    order = modules(root, Path(cfg["kernel_dir"]), cfg["kver"], cfg["modules"])
    (root / "etc/phase/modules.order").write_text("\n".join(order) + "\n")

    files = Path(cfg["files"])
    libdir = root / "usr/lib/phase-boot"
    libdir.mkdir(parents=True)
    copy(Path(cfg["init"]), root / "init")
    (root / "init").chmod(0o755)
    copy(files / "udhcpc.script", libdir / "udhcpc.script")
    (libdir / "udhcpc.script").chmod(0o755)
    copy(files / "proxy.sh", libdir / "proxy.sh")  # sourced by /init (private mode over a proxy)
    if "phase-boot" not in tools:
        log("the phase-boot wheel installed no phase-boot command; /init needs it")
        return 1
    copy(Path(cfg["keyring"]), root / "etc/phase/keyring.toml")
    copy(Path(cfg["hello"]), root / "usr/share/phase/hello.wasm")
    (root / "etc/phase/boot.conf").write_text(
        f"channel={cfg['channel']}\narch={cfg['arch']}\nbuild={cfg['build_id']}\n")
    (root / "etc/os-release").write_text(
        'NAME="Phase Boot"\nID=phase-boot\nPRETTY_NAME="Phase Boot"\n'
        f"VERSION_ID={cfg['build_id']}\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/mdev.conf").write_text("")
    log(f"tools: {', '.join(tools)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
