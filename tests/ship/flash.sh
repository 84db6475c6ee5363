#!/usr/bin/env bash
# Scenario: scripts/flash.sh on a disk image laid out like Raspberry Pi OS's (MBR: FAT32 boot
# partition at sector 8192 with cmdline.txt/config.txt, ext4 root after it, fstab by PARTUUID),
# whose root is the testbed's debootstrapped Debian bookworm (amd64: this machine boots it;
# the same steps apply to an arm64 Pi OS image). Then the flashed root partition is booted
# with systemd-nspawn as the SD card would boot, twice, and the agent must be up each time.
# Host-driven; run by scripts/test-ship.sh (WORK: bundle-0.1.0, release.pub).
#
#   bash tests/ship/flash.sh WORK

# shellcheck disable=SC2016  # single-quoted scripts run in the container, on purpose
set -uo pipefail
W=$(readlink -f "${1:?usage: flash.sh WORK}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$REPO/scripts/testbed.sh"
# shellcheck source=tests/ship/common.sh
source "$REPO/tests/ship/common.sh"
tb_require_root || exit 125
tb_ensure_root || exit 125
export TB_EXEC_TIMEOUT=60
T=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-flash-test.XXXXXX")
IMG="$T/raspios-like.img"
MNT="$T/mnt"
mkdir -p "$MNT"
LOOP=""
cleanup() {
    tb_teardown >/dev/null 2>&1
    mountpoint -q "$MNT" && umount "$MNT"
    [[ -z "$LOOP" ]] || losetup -d "$LOOP"
    rm -rf "$T"
}
trap cleanup EXIT

echo "== flash.sh on a Raspberry Pi OS-like image"

# --- 1. the image: MBR, FAT32 boot partition, ext4 root from the testbed's root --------------
t0=$(tb_now_ms)
root_mib=$(( $(du -sm "$TESTBED_ROOT" | cut -f1) * 13 / 10 + 64 ))
boot_start=8192 boot_sectors=$((64 * 2048))
root_start=$((boot_start + boot_sectors)) root_sectors=$((root_mib * 2048))
truncate -s $(( (root_start + root_sectors) * 512 )) "$IMG"
printf 'label: dos\nlabel-id: 0x5eedf00d\n%s,%s,c\n%s,%s,83\n' "$boot_start" "$boot_sectors" "$root_start" "$root_sectors" |
    sfdisk -q "$IMG" || { fail "sfdisk"; exit 1; }
part() { losetup -f --show -o $(($1 * 512)) --sizelimit $(($2 * 512)) "$IMG"; }
# The FAT partition is filled with mtools: this kernel may lack vfat (no mount needed).
LOOP=$(part $boot_start $boot_sectors)
printf 'console=serial0,115200 console=tty1 root=PARTUUID=5eedf00d-02 rootfstype=ext4 fsck.repair=yes rootwait\n' >"$T/cmdline.txt"
printf '[all]\narm_64bit=1\n' >"$T/config.txt"
mkfs.vfat -F 32 -n BOOTFS "$LOOP" >/dev/null || { fail "boot partition"; exit 1; }
losetup -d "$LOOP"; LOOP=""
mcopy -i "$IMG@@$((boot_start * 512))" "$T/cmdline.txt" "$T/config.txt" :: || { fail "boot partition files"; exit 1; }
LOOP=$(part $root_start $root_sectors)
if ! { mkfs.ext4 -q -L rootfs -d "$TESTBED_ROOT" "$LOOP" && mount "$LOOP" "$MNT" &&
    printf 'proc /proc proc defaults 0 0\nPARTUUID=5eedf00d-01 /boot/firmware vfat defaults 0 2\nPARTUUID=5eedf00d-02 / ext4 defaults,noatime 0 1\n' >"$MNT/etc/fstab" &&
    mkdir -p "$MNT/boot/firmware" "$MNT$TB_RESULTS_IN" && umount "$MNT"; }; then fail "root partition"; exit 1; fi
losetup -d "$LOOP"; LOOP=""
FIGURES+=("test image ($(( $(stat -c %s "$IMG") / 1048576 )) MiB: 64 MiB FAT + ${root_mib} MiB ext4 filled with mkfs.ext4 -d): $(( $(tb_now_ms) - t0 )) ms")
pass "image: $(sfdisk -d "$IMG" | grep -c '^/') partitions (FAT32 boot + ext4 root)"

# --- 2. flash.sh ---------------------------------------------------------------------------
printf '[gpio]\nbackend = "simulated"\n' >"$T/site.toml"   # no GPIO where this image boots
if [[ -f "$REPO/target/device/aarch64-unknown-linux-gnu/doorbell-agent" ]]; then
    before=$(sha256sum "$IMG")
    out=$("$REPO/scripts/flash.sh" --target aarch64-unknown-linux-gnu "$IMG" 2>&1); rc=$?
    if [[ $rc == 3 && "$out" == *"the image's programs are x86_64, the bundle (aarch64-unknown-linux-gnu) is aarch64"* && "$(sha256sum "$IMG")" == "$before" ]]; then
        pass "an aarch64 agent into an amd64 image: refused (exit 3), image unchanged"
    else
        fail "wrong-architecture flash (exit $rc)" "$out"
    fi
else
    echo "SKIP: wrong-architecture flash (no target/device/aarch64-unknown-linux-gnu build)"
fi
t0=$(tb_now_ms)
out=$("$REPO/scripts/flash.sh" --bundle "$W/bundle-0.1.0" --config "$T/site.toml" --public-key "$(cat "$W/release.pub")" "$IMG" 2>&1); rc=$?
if [[ $rc == 0 && "$out" == *"root partition 2 at sector $root_start"* && "$out" == *"it starts at the image's first boot"* ]]; then
    pass "flash.sh: exit 0 ($(( $(tb_now_ms) - t0 )) ms)"
else
    fail "flash.sh (exit $rc)" "$out"
fi
out=$("$REPO/scripts/flash.sh" --bundle "$W/bundle-0.1.0" --config "$T/site.toml" --public-key "$(cat "$W/release.pub")" "$IMG" 2>&1); rc=$?
if [[ $rc == 0 && "$out" == *"(0 changes)"* ]]; then pass "flash.sh again: nothing changes"; else fail "flash.sh again (exit $rc)" "$out"; fi

# What is in the image, before it ever booted.
LOOP=$(part $root_start $root_sectors)
mount "$LOOP" "$MNT"
check "image: user doorbell in gpio and video, in /etc/passwd and /etc/group" grep -q '^doorbell:x:[0-9]*:[0-9]*:Doorbell agent:/nonexistent:/usr/sbin/nologin$' "$MNT/etc/passwd"
check "image: gpio, video list doorbell" test "$(grep -cE '^(gpio|video):.*doorbell' "$MNT/etc/group")" = 2
check "image: enabled (multi-user.target.wants symlink)" test "$(readlink "$MNT/etc/systemd/system/multi-user.target.wants/doorbell-agent.service")" = /usr/local/lib/systemd/system/doorbell-agent.service
check "image: slot a, current and committed, slotctl, units, sysusers.d, CLI link" test -x "$MNT/opt/doorbell-agent/slots/a/doorbell-agent" -a \
    "$(readlink "$MNT/opt/doorbell-agent/current")$(readlink "$MNT/opt/doorbell-agent/committed")" = slots/aslots/a -a -x "$MNT/usr/local/sbin/doorbell-slotctl" -a \
    -f "$MNT/usr/local/lib/systemd/system/doorbell-agent-rollback.service" -a -f "$MNT/usr/local/lib/sysusers.d/doorbell-agent.conf" -a -L "$MNT/usr/local/bin/doorbell-agent"
check "image: face models in /usr/local/share/doorbell-agent/models" test -s "$MNT/usr/local/share/doorbell-agent/models/face_detection_short_range.onnx" -a \
    -s "$MNT/usr/local/share/doorbell-agent/models/dlib_face_recognition_resnet_v1.onnx"
check "image: config = the site config + the update key, root:doorbell 0640" test "$(stat -c '%u %a' "$MNT/etc/doorbell-agent/config.toml") $(grep -c -e '^backend = "simulated"' -e '^public_key = ' "$MNT/etc/doorbell-agent/config.toml")" = "0 640 2"

# --- 3. first boot of the flashed root -------------------------------------------------------
boot_flashed() {
    tb_boot --directory "$MNT" >"$T/boot.log" 2>&1 || { fail "the flashed root boots" "$(cat "$T/boot.log")"; trap cleanup EXIT; return 1; }
    trap cleanup EXIT   # tb_boot installed its own
}
shut_down() { tb_poweroff; tb_teardown >/dev/null 2>&1; trap cleanup EXIT; }
t0=$(tb_now_ms)
if boot_flashed; then
    if eventually 30 healthy; then
        pass "first boot: the agent is up and /health answers 200 ($(( $(tb_now_ms) - t0 )) ms from nspawn start)"
        FIGURES+=("flashed image, first boot to /health 200 under nspawn: $(( $(tb_now_ms) - t0 )) ms")
    else
        fail "first boot: agent healthy" "$(diag)"
    fi
    check "first boot: slotctl bootstrapped the slot state (0.1.0 committed in slot a)" slot_is "0.1.0 committed in slot a"
    pid=$(unit_prop MainPID)
    check "first boot: runs as doorbell from /opt/doorbell-agent/current" test "$(tb_exec stat -c %U "/proc/$pid") $(tb_exec cat "/proc/$pid/cmdline" | tr '\0' ' ')" = \
        "doorbell /opt/doorbell-agent/current/doorbell-agent run --config /etc/doorbell-agent/config.toml "
    shut_down
    if boot_flashed; then
        check "second boot: up again" eventually 30 healthy
        check "second boot: slot state kept" slot_is "0.1.0 committed in slot a"
        shut_down
    fi
fi
umount "$MNT"
losetup -d "$LOOP"; LOOP=""

summary "flash.sh"
