#!/usr/bin/env bash
# flash.sh — puts doorbell-agent into a Raspberry Pi OS disk image (.img), so that an SD card
# written from it boots straight into a running agent. Run as root on the build machine,
# before writing the card (rpi-imager, dd, bmaptool).
#
#   scripts/flash.sh [--target TRIPLE | --bundle DIR] [--bin-dir DIR] [--config FILE]
#                    [--public-key KEY] IMAGE
#
#   --target      aarch64-unknown-linux-gnu (64-bit Pi OS, the default) or
#                 armv7-unknown-linux-gnueabihf (32-bit Pi OS on a Pi 2-5); binaries from
#                 target/device/TRIPLE (scripts/cross-build.sh) or --bin-dir
#   --bundle      a bundle from scripts/make-bundle.sh instead
#   --config      the device's configuration (broker, key, ...); default: the commented one
#   --public-key  the update key (base64) for [update] public_key
#
# The image's root partition (the MBR's Linux partition; the FAT boot partition is left
# alone) is attached with losetup at its offset and mounted; then install.sh --root does what
# it does on a device, into the image: the user `doorbell` in gpio/video (systemd-sysusers
# --root, with the sysusers.d file installed too), doorbell-slotctl and the units, the A/B
# layout with the agent in slot a, the config, and the service enabled (systemctl --root).
#
# First boot: nothing is left for it to do. Everything is done here, on files, so the agent
# starts on the first boot like any enabled service, after Pi OS's own first-boot steps
# (partition resize, user setup), with no extra unit that could fail on the device. Boot-time
# systemd-sysusers is not relied on (its unit runs only when /etc needs an update), nor a
# oneshot first-boot unit (one more thing on the device that must work once, unobserved).
# The runtime directories come from the unit itself (StateDirectory=) and slotctl's first
# pre-start, exactly as after install.sh.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

target=aarch64-unknown-linux-gnu bundle="" bin_dir="" config="" public_key="" image=""
while (($#)); do
    case "$1" in
        --target) target="$2"; shift ;;
        --bundle) bundle=$(readlink -f "$2"); shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --config) config=$(readlink -f "$2"); shift ;;
        --public-key) public_key="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        -*) echo "flash.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [[ -z "$image" ]] || { echo "flash.sh: one IMAGE only" >&2; exit 2; }; image=$(readlink -f "$1") ;;
    esac
    shift
done
die() { echo "flash.sh: $*" >&2; exit 1; }
[[ -n "$image" ]] || { echo "flash.sh: no IMAGE (see --help)" >&2; exit 2; }
[[ -f "$image" && -w "$image" ]] || die "$image: not a writable file"
[[ "$(id -u)" == 0 ]] || die "needs root (losetup, mount)"
command -v systemd-sysusers >/dev/null || die "needs systemd-sysusers and systemctl (the systemd package) on this machine"

# The partition table: Raspberry Pi OS images are MBR (DOS) with a FAT boot partition and
# one Linux root partition. Read from the four primary entries at byte 446.
le32() { od -An -tu4 -j "$1" -N4 "$image" | tr -d ' '; }
[[ "$(od -An -tx1 -j510 -N2 "$image" | tr -d ' ')" == 55aa ]] || die "$image has no MBR partition table (not a Raspberry Pi OS image?)"
root_start="" root_sectors="" boot=""
for i in 0 1 2 3; do
    e=$((446 + 16 * i))
    type=$(od -An -tx1 -j $((e + 4)) -N1 "$image" | tr -d ' ')
    case "$type" in
        ee) die "$image has a GPT (protective MBR); Raspberry Pi OS images use MBR" ;;
        0b | 0c | 0e) boot=$((i + 1)) ;;
        83)
            [[ -z "$root_start" ]] || die "$image has more than one Linux partition; which is the root is unclear"
            root_start=$(le32 $((e + 8))) root_sectors=$(le32 $((e + 12))) root_part=$((i + 1)) ;;
    esac
done
[[ -n "$root_start" ]] || die "$image has no Linux (0x83) partition"
echo "$image: boot partition ${boot:-none} (FAT), root partition $root_part at sector $root_start ($((root_sectors / 2048)) MiB)"

if [[ -z "$bundle" ]]; then
    bundle_tmp=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-flash-bundle.XXXXXX")
    bundle="$bundle_tmp/bundle"
    "$REPO/scripts/make-bundle.sh" --target "$target" ${bin_dir:+--bin-dir "$bin_dir"} --out "$bundle"
fi
[[ -x "$bundle/install.sh" ]] || die "$bundle is not a bundle (scripts/make-bundle.sh)"

mnt=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-flash-root.XXXXXX")
loop=""
cleanup() {
    mountpoint -q "$mnt" && umount "$mnt"
    [[ -z "$loop" ]] || losetup -d "$loop"
    rmdir "$mnt"
    [[ -z "${bundle_tmp:-}" ]] || rm -rf "$bundle_tmp"
}
trap cleanup EXIT
# The root partition alone, by offset (no partition scan needed: works where the kernel does
# not create loopNpM nodes).
loop=$(losetup -f --show -o $((root_start * 512)) --sizelimit $((root_sectors * 512)) "$image")
# Read-only first: an image the bundle does not fit is left as it was, byte for byte.
mount -o ro "$loop" "$mnt"
[[ -f "$mnt/etc/os-release" && -e "$mnt/usr/bin/env" ]] || die "partition $root_part of $image is not a Linux root file system"
echo "root file system: $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$mnt/etc/os-release")"
bash "$bundle/install.sh" --check --root "$mnt" --from "$bundle"
mount -o remount,rw "$mnt"

args=(--root "$mnt" --from "$bundle")
[[ -z "$config" ]] || args+=(--config "$config")
[[ -z "$public_key" ]] || args+=(--public-key "$public_key")
bash "$bundle/install.sh" "${args[@]}"
sync -f "$mnt"
umount "$mnt"
echo "done: write $image to an SD card; the agent starts at its first boot (journalctl -u doorbell-agent)"
