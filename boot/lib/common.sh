# shellcheck shell=sh
# Shared by boot/build, boot/test, boot/release: paths, the download cache, logging.
# Sourced, never run. Expects BOOT (the boot/ directory) to be set.

ROOT=$(cd "${BOOT:?}/.." && pwd)

# The download cache: kernel and Python .debs, their extracted trees, PyPI wheels.
#   $PHASE_BOOT_CACHE                 if set;
#   /var/cache/phase-boot             under CI=true when it can be created (it survives
#                                     between CI runs on the same machine: CI clones afresh);
#   boot/cache/                       otherwise (gitignored).
boot_cache_dir() {
    if [ -n "${PHASE_BOOT_CACHE:-}" ]; then
        printf '%s\n' "$PHASE_BOOT_CACHE"
    elif [ "${CI:-}" = true ] && mkdir -p /var/cache/phase-boot 2>/dev/null \
            && [ -w /var/cache/phase-boot ]; then
        printf '%s\n' /var/cache/phase-boot
    else
        printf '%s\n' "$BOOT/cache"
    fi
}

CACHE=$(boot_cache_dir)
# shellcheck disable=SC2034  # used by the scripts that source this file
OUT=${PHASE_BOOT_OUT:-$BOOT/out}

say() { printf 'boot: %s\n' "$*" >&2; }
die() { printf 'boot: error: %s\n' "$*" >&2; exit "${2:-1}"; }

need() {
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "missing host tool: $t (see .ci/apt-packages.txt)" 69
    done
}

# fetch_deb PKG[:ARCH] -> prints the path of the cached .deb.
# Cached by the pool file name (name_version_arch.deb), so a new Debian version is a
# new file and an unchanged one is never downloaded twice.
# resolve_debs PKG[:ARCH]...: ask apt once for the pool file names of many packages, so
# fetch_deb does not run apt-cache per package (that is most of a warm build's time).
DEB_LIST=""
resolve_debs() {
    DEB_LIST=$(apt-cache show --no-all-versions "$@" 2>/dev/null \
        | awk '/^Package: /{p=$2} /^Architecture: /{a=$2} /^Filename: /{print p, a, $2}')
}

fetch_deb() {
    mkdir -p "$CACHE/debs"
    name=${1%%:*}
    want_arch=${1#"$name"}; want_arch=${want_arch#:}
    pool=$(printf '%s\n' "$DEB_LIST" | awk -v p="$name" -v a="$want_arch" \
        '$1 == p && (a == "" || $2 == a || $2 == "all") {print $3; exit}')
    if [ -z "$pool" ]; then
        pool=$(apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Filename: //p' | head -n 1)
    fi
    base=${pool##*/}
    if [ -n "$base" ] && [ -s "$CACHE/debs/$base" ]; then
        printf '%s\n' "$CACHE/debs/$base"; return 0
    fi
    if [ -z "$base" ]; then
        # no apt lists (offline): use whatever version is cached
        cached=$(find "$CACHE/debs" -name "${name}_*.deb" 2>/dev/null | sort | tail -n 1)
        [ -n "$cached" ] || die "cannot find $1 in apt's lists (run apt-get update) nor in $CACHE/debs" 69
        printf '%s\n' "$cached"; return 0
    fi
    tmp=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
    if ! (cd "$tmp" && apt-get download -q "$1" >/dev/null 2>"$tmp/.err"); then
        cat "$tmp/.err" >&2; rm -rf "$tmp"; die "apt-get download $1 failed" 69
    fi
    got=$(find "$tmp" -name '*.deb' | head -n 1)
    [ -n "$got" ] || { rm -rf "$tmp"; die "apt-get download $1 produced no .deb" 69; }
    mv "$got" "$CACHE/debs/$base"
    rm -rf "$tmp"
    say "downloaded $base"
    printf '%s\n' "$CACHE/debs/$base"
}

# extract_deb DEB -> prints a directory holding the unpacked package (cached).
extract_deb() {
    d="$CACHE/x/$(basename "$1" .deb)"
    if [ ! -f "$d/.done" ]; then
        rm -rf "$d"; mkdir -p "$d"
        dpkg-deb -x "$1" "$d" || die "cannot unpack $1" 74
        : > "$d/.done"
    fi
    printf '%s\n' "$d"
}

# The host Python that runs the build helpers: the project venv (./dev setup).
host_python() {
    if [ ! -x "$ROOT/.venv/bin/python" ] || [ "${PHASE_BOOT_SKIP_SETUP:-}" != 1 ]; then
        "$ROOT/dev" setup >&2 || die "./dev setup failed" 70
    fi
    printf '%s\n' "$ROOT/.venv/bin/python"
}
