# shellcheck shell=sh
# boot/build's arm64 (aarch64) pieces on an x86_64 host. Sourced, never run; expects
# common.sh (say, die) to be sourced first.

# foreign_arch_ready DEBARCH: the Debian architecture DEBARCH is known to dpkg and apt
# has its package lists. As root, adds it (`dpkg --add-architecture`) and runs
# `apt-get update` when either is missing, so a fresh machine builds without a manual
# step; otherwise says which commands to run.
foreign_arch_ready() {
    a=$1
    [ "$a" = "$(dpkg --print-architecture)" ] && return 0
    if dpkg --print-foreign-architectures | grep -qx "$a" \
            && apt-cache show --no-all-versions "busybox-static:$a" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        die "no $a package lists: run 'sudo dpkg --add-architecture $a && sudo apt-get update'" 69
    fi
    say "adding the Debian architecture $a (dpkg --add-architecture $a; apt-get update)"
    dpkg --add-architecture "$a" || die "dpkg --add-architecture $a failed" 69
    apt-get update -q >&2 || die "apt-get update failed (network? see above)" 69
    apt-cache show --no-all-versions "busybox-static:$a" >/dev/null 2>&1 \
        || die "apt still has no $a packages after apt-get update" 69
}

# arm64_default_out: the arm64 build writes to boot/out/aarch64 unless PHASE_BOOT_OUT
# says otherwise, so it never overwrites the x86_64 artifacts in boot/out.
arm64_default_out() {
    if [ -z "${PHASE_BOOT_OUT:-}" ]; then
        printf '%s\n' "$BOOT/out/aarch64"
    else
        printf '%s\n' "$PHASE_BOOT_OUT"
    fi
}

# pip_platforms manylinux_2_M_ARCH: pip's --platform options for a foreign build. pip
# takes a manylinux tag literally (no older glibc implied), so this lists every
# manylinux_2_N tag from M down to 17, and manylinux2014, for ARCH.
pip_platforms() {
    tag=$1
    arch=${tag#manylinux_2_*_}
    m=${tag#manylinux_2_}; m=${m%%_*}
    while [ "$m" -ge 17 ]; do
        printf -- '--platform manylinux_2_%s_%s ' "$m" "$arch"
        m=$((m - 1))
    done
    printf -- '--platform manylinux2014_%s\n' "$arch"
}

# uki_layout ARCH KERNEL: sets UKI_OBJCOPY (the host's objcopy cannot write arm64 PE
# files: binutils-aarch64-linux-gnu's can) and UKI_VMA_INITRD, the address of the UKI's
# .initrd section: 0x3000000 on x86_64; on arm64, whose uncompressed Image (~33 MB) does
# not fit below it, the first MiB boundary after .linux (at 0x2000000).
# shellcheck disable=SC2034  # UKI_* are read by boot/build
uki_layout() {
    UKI_OBJCOPY=objcopy
    UKI_VMA_INITRD=0x3000000
    [ "$1" = aarch64 ] || return 0
    UKI_OBJCOPY=aarch64-linux-gnu-objcopy
    command -v "$UKI_OBJCOPY" >/dev/null 2>&1 \
        || die "missing host tool: $UKI_OBJCOPY (Debian package binutils-aarch64-linux-gnu)" 69
    end=$(( 0x2000000 + $(stat -c %s "$2") ))
    UKI_VMA_INITRD=$(printf '0x%x' $(( (end + 0xfffff) / 0x100000 * 0x100000 )))
}

# kexec_tools_bin ARCH SFX: prints the path of kexec-tools' kexec for the image, or
# nothing. Only aarch64 needs it: Debian 12's arm64 kernel has no kexec_file_load, so
# phase-boot falls back to kexec_load(2) through it (phase_boot/kexec_tools.py).
kexec_tools_bin() {
    [ "$1" = aarch64 ] || return 0
    d=$(extract_deb "$(fetch_deb "kexec-tools$2")")
    [ -x "$d/sbin/kexec" ] || die "kexec-tools has no sbin/kexec" 70
    printf '%s\n' "$d/sbin/kexec"
}

# arch_lib_pkgs ARCH: extra library packages the image needs on ARCH. Debian's arm64
# kexec-tools links libxenctrl (Xen support), which needs the small libxen* libraries;
# only what kexec really needs is copied (mkroot.py resolves the ELF closure).
arch_lib_pkgs() {
    [ "$1" = aarch64 ] || return 0
    echo "libxenmisc4.17 libxentoollog1 libxencall1 libxenevtchn1 libxengnttab1"
    echo "libxenforeignmemory1 libxendevicemodel1 libxentoolcore1"
}
