#!/usr/bin/env bash
# The device test: the aarch64 release build, flashed by scripts/flash.sh into an SD-card image
# laid out like Raspberry Pi OS, boots on an emulated Raspberry Pi Zero 2 W (QEMU -M raspi3b,
# Debian's arm64 kernel, systemd) and does the whole job, each step checked from outside the
# VM as an operator sees it (tests/device/scenario.py: first boot and doctor, the button on the
# real pinctrl-bcm2835 GPIO driver, recognition against x86, the fleet link, an A/B update and a
# rolled-back one, power cuts during rings and during an install).
#
#   scripts/test-device.sh [--keep]      # root; installs what it needs; run by scripts/test.sh
#
#   --keep   keep the run directory (image, serial logs, journal) even when every step passed
#
# Exits 0 only when every step passed; a failure names the step and prints the guest's serial
# console and journal. Builds are cached: the aarch64 binary in the build cache
# (scripts/cross-build.sh), the base image, kernel and initramfs in
# /var/cache/doorbell-agent/device (scripts/pi-image.sh); each run flashes a fresh copy.
# The board's network is QEMU user networking with restrict=on and explicit forwards only,
# and the run itself (broker, QEMU, operator tools) happens in an empty network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

keep=0
for a in "$@"; do
    case "$a" in
        --keep) keep=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) echo "test-device.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$(id -u)" == 0 ]] || { echo "test-device.sh: needs root (flash.sh mounts the image, unshare makes the network namespace)" >&2; exit 1; }

log() { printf '\n==> [device] %s\n' "$*"; }
t0=$SECONDS

log "tools"
scripts/test-deps.sh >/dev/null
need=()
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
    mkdir -p /var/lock
    DEBIAN_FRONTEND=noninteractive flock -w 600 /var/lock/doorbell-testbed-apt.lock apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

log "the aarch64 release build (scripts/cross-build.sh; cached)"
scripts/cross-build.sh --no-smoke aarch64-unknown-linux-gnu

log "the operator's tools on this machine (x86_64 release build)"
cargo build --locked --release --quiet --bin doorbell-agent --bin doorbell-fleet --bin doorbell-release

log "the board: QEMU, kernel, initramfs and base SD image (scripts/pi-image.sh; cached)"
eval "$(scripts/pi-image.sh)"
for v in KERNEL DTB INITRD IMAGE; do [[ -n "${!v:-}" && -e "${!v}" ]] || { echo "test-device.sh: pi-image.sh gave no $v" >&2; exit 1; }; done

work=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-device.XXXXXX")
cleanup() {
    rc=$?
    if ((rc == 0 && !keep)); then rm -rf "$work"; else echo "run directory kept: $work"; fi
}
trap cleanup EXIT
echo "run directory: $work"

log "a fresh SD card: keys, artifacts, the site config, flash.sh (tests/device/scenario.py prepare)"
python3 tests/device/scenario.py prepare --repo "$REPO" --work "$work" \
    --kernel "$KERNEL" --dtb "$DTB" --initrd "$INITRD" --image "$IMAGE"

log "the scenario, in an empty network namespace (tests/device/scenario.py run)"
unshare --net -- bash -c 'ip link set lo up && exec python3 "$0" run --repo "$1" --work "$2"' \
    tests/device/scenario.py "$REPO" "$work"

log "device test passed in $((SECONDS - t0)) s"
