#!/bin/sh
# secureboot.sh --keys=DIR [--out=OUT] [--dest=DIR] [--cmdline=ARGS] [--modes=LIST]
#
# The Secure Boot step of `boot/build --secure-boot-keys=DIR`; runs on its own after a
# boot/build of x86_64 (it reads OUT's vmlinuz, initramfs.img, work/os-release and
# build-info.json). With the db key of DIR (boot/keys makes a DEVELOPMENT ONLY set) it
# writes to DEST (default OUT/secureboot):
#   vmlinuz.signed          the kernel, its distribution signature removed, signed with
#                           db: the kernel a boot manifest names, so that
#                           kexec_file_load verifies it under lockdown (platform keyring)
#   systemd-bootx64.efi     systemd-boot, signed
#   phase-boot-MODE.efi     one signed unified kernel image per mode (LIST, default
#                           "internet local private"): stub + signed kernel + initramfs +
#                           cmdline. Under Secure Boot the stub ignores any other command
#                           line, so ARGS (e.g. phase.provider=URL) go in here, signed
#   phase-boot.img          GPT disk: ESP (signed systemd-boot as EFI/BOOT/BOOTX64.EFI,
#                           one loader entry per UKI, nothing unsigned that boots) +
#                           the ext4 cache partition PHASECACHE
#   OVMF_VARS_4M.fd         Debian's OVMF variable store with PK, KEK and db enrolled and
#                           Secure Boot on (virt-fw-vars), for OVMF_CODE_4M.secboot.fd
#   secureboot-info.json    what was signed with what
# Signing: sbsign (sbsigntool), after sbattach --remove of any existing signature.
# Enrolment: virt-fw-vars (PyPI virt-firmware, in a cached venv), which writes the
# authenticated variables straight into the edk2 store file.
set -eu
BOOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$BOOT/lib/common.sh"

VIRT_FIRMWARE=virt-firmware==26.10
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
KEYS="" DEST="" EXTRA="" MODES="internet local private"
for a in "$@"; do
    case "$a" in
        --keys=*) KEYS=${a#--keys=} ;;
        --out=*) OUT=${a#--out=} ;;
        --dest=*) DEST=${a#--dest=} ;;
        --cmdline=*) EXTRA=${a#--cmdline=} ;;
        --modes=*) MODES=${a#--modes=} ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "secureboot: unknown argument $a (try --help)" 64 ;;
    esac
done
[ -n "$KEYS" ] || die "secureboot: --keys=DIR is required (boot/keys DIR makes a development set)" 64
DEST=${DEST:-$OUT/secureboot}
need sbsign sbattach sbverify objcopy mkfs.vfat mmd mcopy sgdisk mkfs.ext4 truncate
[ -f "$OVMF_VARS" ] || die "secureboot: no $OVMF_VARS (Debian package ovmf)" 69
for f in PK.crt KEK.crt db.key db.crt owner.guid; do
    [ -s "$KEYS/DEVELOPMENT-ONLY-$f" ] || [ -s "$KEYS/$f" ] \
        || die "secureboot: $KEYS has no $f (boot/keys $KEYS makes a DEVELOPMENT ONLY set)" 66
done
key() { if [ -s "$KEYS/DEVELOPMENT-ONLY-$1" ]; then echo "$KEYS/DEVELOPMENT-ONLY-$1"; else echo "$KEYS/$1"; fi; }
case "$(key db.key)" in */DEVELOPMENT-ONLY-*) say "secureboot: signing with DEVELOPMENT ONLY keys from $KEYS" ;; esac
for f in vmlinuz initramfs.img work/os-release build-info.json; do
    [ -s "$OUT/$f" ] || die "secureboot: no $OUT/$f (run boot/build first)" 66
done
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || PY=$(command -v python3)
info() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$OUT/build-info.json" "$1"; }
ARCH=$(info arch)
CHANNEL=$(info channel)
[ "$ARCH" = x86_64 ] || die "secureboot: only the x86_64 build is signed and tested (this build is $ARCH)" 69

# --- virt-fw-vars in a cached venv --------------------------------------------------
VENV="$CACHE/virt-firmware-$("$PY" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
if [ ! -f "$VENV/.done" ] || [ "$(cat "$VENV/.done")" != "$VIRT_FIRMWARE" ]; then
    rm -rf "$VENV"
    if ! { "$PY" -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check \
            "$VIRT_FIRMWARE" >&2; }; then
        die "secureboot: cannot install $VIRT_FIRMWARE into $VENV" 69
    fi
    echo "$VIRT_FIRMWARE" > "$VENV/.done"
fi

rm -rf "$DEST"
mkdir -p "$DEST/work"
W="$DEST/work"

# sign IN OUT: strip any signatures IN carries, then sign with db
sign() {
    cp "$1" "$W/unsigned"
    n=0
    while sbverify --list "$W/unsigned" 2>/dev/null | grep -q '^signature [0-9]'; do
        sbattach --remove "$W/unsigned" >/dev/null || die "secureboot: sbattach --remove $1 failed" 70
        n=$((n + 1)); [ "$n" -lt 8 ] || die "secureboot: cannot strip the signatures of $1" 70
    done
    sbsign --key "$(key db.key)" --cert "$(key db.crt)" --output "$2" "$W/unsigned" \
        >"$W/sbsign.log" 2>&1 || { cat "$W/sbsign.log" >&2; die "secureboot: sbsign $1 failed" 70; }
    sbverify --cert "$(key db.crt)" "$2" >/dev/null 2>&1 || die "secureboot: $2 does not verify" 70
    rm -f "$W/unsigned"
}

resolve_debs systemd-boot-efi
SDBOOT=$(extract_deb "$(fetch_deb systemd-boot-efi)")/usr/lib/systemd/boot/efi
sign "$OUT/vmlinuz" "$DEST/vmlinuz.signed"
sign "$SDBOOT/systemd-bootx64.efi" "$DEST/systemd-bootx64.efi"
for mode in $MODES; do
    printf '%s' "console=tty0 console=ttyS0,115200 phase.mode=$mode phase.channel=$CHANNEL${EXTRA:+ $EXTRA}" \
        > "$W/cmdline-$mode.txt"
    objcopy \
        --add-section .osrel="$OUT/work/os-release" --change-section-vma .osrel=0x20000 \
        --add-section .cmdline="$W/cmdline-$mode.txt" --change-section-vma .cmdline=0x30000 \
        --add-section .linux="$DEST/vmlinuz.signed" --change-section-vma .linux=0x2000000 \
        --add-section .initrd="$OUT/initramfs.img" --change-section-vma .initrd=0x3000000 \
        "$SDBOOT/linuxx64.efi.stub" "$W/uki.efi" || die "secureboot: building the $mode UKI failed" 70
    sign "$W/uki.efi" "$DEST/phase-boot-$mode.efi"
    rm -f "$W/uki.efi"
done

# --- the variable store: PK, KEK, db enrolled, Secure Boot on --------------------------
GUID=$(tr -d ' \n' < "$(key owner.guid)")
"$VENV/bin/virt-fw-vars" --input "$OVMF_VARS" --output "$DEST/OVMF_VARS_4M.fd" \
    --set-pk "$GUID" "$(key PK.crt)" --add-kek "$GUID" "$(key KEK.crt)" \
    --add-db "$GUID" "$(key db.crt)" --secure-boot >"$W/virt-fw-vars.log" 2>&1 \
    || { cat "$W/virt-fw-vars.log" >&2; die "secureboot: virt-fw-vars could not enrol the keys" 70; }

# --- the disk: signed systemd-boot, one entry per signed UKI, cache partition ----------
set --
for mode in $MODES; do set -- "$@" "$DEST/phase-boot-$mode.efi"; done
bytes=$(cat "$DEST/systemd-bootx64.efi" "$@" | wc -c)
ESP_MIB=$(( bytes * 11 / 10 / 1048576 + 16 ))
[ "$ESP_MIB" -lt 64 ] && ESP_MIB=64
ESP="$W/esp.img"
mkfs.vfat -C -F 32 -n PHASEESP "$ESP" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/phase ::/loader ::/loader/entries
mcopy -i "$ESP" "$DEST/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
first=""
for mode in $MODES; do
    first=${first:-$mode}
    mcopy -i "$ESP" "$DEST/phase-boot-$mode.efi" "::/EFI/phase/phase-boot-$mode.efi"
    printf 'title Phase Boot: %s (Secure Boot)\nefi /EFI/phase/phase-boot-%s.efi\n' "$mode" "$mode" \
        > "$W/phase-$mode.conf"
    mcopy -i "$ESP" "$W/phase-$mode.conf" "::/loader/entries/phase-$mode.conf"
done
printf 'default phase-%s.conf\ntimeout 5\nconsole-mode keep\neditor no\n' "$first" > "$W/loader.conf"
mcopy -i "$ESP" "$W/loader.conf" ::/loader/loader.conf
mkfs.ext4 -q -F -L PHASECACHE -E root_owner=0:0 "$W/cache.img" 256M >/dev/null
ESP_S=$((ESP_MIB * 2048)) CACHE_S=$((256 * 2048))
P2=$((2048 + ESP_S))
DISK="$DEST/phase-boot.img"
truncate -s $(( (P2 + CACHE_S + 2048) * 512 )) "$DISK"
sgdisk -o -n "1:2048:+$ESP_S" -t 1:ef00 -c 1:PHASEESP \
       -n "2:$P2:+$CACHE_S" -t 2:8300 -c 2:PHASECACHE "$DISK" >/dev/null
dd if="$ESP" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$W/cache.img" of="$DISK" bs=1M seek=$((P2 / 2048)) conv=notrunc,sparse status=none
rm -rf "$W"

"$PY" - "$DEST" "$(key db.crt)" "$("$VENV/bin/pip" show virt-firmware | sed -n 's/^Version: //p')" \
    "$MODES" "$EXTRA" <<'EOF'
import hashlib, json, os, subprocess, sys
dest, dbcrt, vfw, modes, extra = sys.argv[1:]
fp = subprocess.run(["openssl", "x509", "-in", dbcrt, "-noout", "-fingerprint", "-sha256"],
                    capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
signed = sorted(f for f in os.listdir(dest) if f.endswith((".efi", ".signed")))
json.dump({"v": 1, "type": "boot_secureboot", "db_cert": dbcrt, "db_sha256_fingerprint": fp,
           "development_keys": "DEVELOPMENT-ONLY-" in dbcrt, "virt_firmware": vfw,
           "modes": modes.split(), "cmdline_extra": extra,
           "signed": {f: "sha256:" + hashlib.sha256(open(os.path.join(dest, f), "rb").read()).hexdigest()
                      for f in signed}},
          open(os.path.join(dest, "secureboot-info.json"), "w"), indent=1)
EOF
say "secureboot: signed $(echo "$MODES" | wc -w) UKI(s), systemd-boot and the kernel; disk and OVMF variables in $DEST"
