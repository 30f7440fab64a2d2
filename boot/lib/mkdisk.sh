#!/bin/sh
# mkdisk.sh WORKDIR DISK BOOTLOADER.EFI EFI-NAME KERNEL INITRAMFS BASE-CMDLINE [CACHE-MIB]
#
# A raw GPT disk, built without loop devices or mounts (mtools, sgdisk, dd):
#   partition 1  ESP (FAT32, "PHASEESP"): systemd-boot as the removable-media loader
#                (EFI/BOOT/<EFI-NAME>), loader/entries/phase-<mode>.conf for internet,
#                local and private, and /phase/{vmlinuz,initramfs.img}
#   partition 2  ext4 "PHASECACHE": content store, rollback marks, node key, receipts
#                (never mounted in private mode)
set -eu
[ $# -ge 7 ] || { echo "usage: mkdisk.sh WORK DISK LOADER EFINAME KERNEL INITRAMFS CMDLINE [CACHE-MIB]" >&2; exit 64; }
WORK=$1 DISK=$2 LOADER=$3 EFINAME=$4 KERNEL=$5 INITRD=$6 CMDLINE=$7 CACHE_MIB=${8:-256}

rm -rf "$WORK"; mkdir -p "$WORK"
bytes=$(( $(stat -c %s "$KERNEL") + $(stat -c %s "$INITRD") + $(stat -c %s "$LOADER") ))
ESP_MIB=$(( bytes * 11 / 10 / 1048576 + 16 ))
[ "$ESP_MIB" -lt 64 ] && ESP_MIB=64

ESP="$WORK/esp.img"
mkfs.vfat -C -F 32 -n PHASEESP "$ESP" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/phase
mcopy -i "$ESP" "$LOADER" "::/EFI/BOOT/$EFINAME"
mcopy -i "$ESP" "$KERNEL" ::/phase/vmlinuz
mcopy -i "$ESP" "$INITRD" ::/phase/initramfs.img
printf 'default phase-internet.conf\ntimeout 5\nconsole-mode keep\neditor no\n' > "$WORK/loader.conf"
mcopy -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
for mode in internet local private; do
    case "$mode" in
        internet) what="DHT + mDNS, cache on this stick" ;;
        local) what="LAN only (mDNS), falls back to the verified cache" ;;
        private) what="no disk writes, ephemeral identity" ;;
    esac
    printf 'title Phase Boot: %s (%s)\nlinux /phase/vmlinuz\ninitrd /phase/initramfs.img\noptions %s phase.mode=%s\n' \
        "$mode" "$what" "$CMDLINE" "$mode" > "$WORK/phase-$mode.conf"
    mcopy -i "$ESP" "$WORK/phase-$mode.conf" "::/loader/entries/phase-$mode.conf"
done

CACHEFS="$WORK/cache.img"
mkfs.ext4 -q -F -L PHASECACHE -E root_owner=0:0 "$CACHEFS" "${CACHE_MIB}M"

ESP_S=$((ESP_MIB * 2048))
CACHE_S=$((CACHE_MIB * 2048))
P1=2048
P2=$((P1 + ESP_S))
rm -f "$DISK"
truncate -s $(( (P2 + CACHE_S + 2048) * 512 )) "$DISK"
sgdisk -o -n "1:$P1:+$ESP_S" -t 1:ef00 -c 1:PHASEESP \
       -n "2:$P2:+$CACHE_S" -t 2:8300 -c 2:PHASECACHE "$DISK" >/dev/null
dd if="$ESP" of="$DISK" bs=1M seek=$((P1 / 2048)) conv=notrunc,sparse status=none
dd if="$CACHEFS" of="$DISK" bs=1M seek=$((P2 / 2048)) conv=notrunc,sparse status=none
rm -f "$ESP" "$CACHEFS"
