#!/usr/bin/env bash
# pi-image.sh — the device test bed's emulated Raspberry Pi Zero 2 W: QEMU, Debian's arm64
# kernel with the Zero 2 W device tree, a small initramfs and a base SD-card image laid out
# like Raspberry Pi OS (into which scripts/flash.sh installs the agent, as a user does).
#
#   scripts/pi-image.sh [--cache DIR] [--rebuild] [--refresh]
#
#   --cache DIR  where everything is kept (default $DOORBELL_DEVICE_CACHE, else
#                /var/cache/doorbell-agent/device)
#   --rebuild    build the image again even when a cached one fits
#   --refresh    refresh the arm64 package lists now (done by itself every 7 days)
#
# Prints, on stdout and nothing else, shell assignments (`eval "$(scripts/pi-image.sh)"`):
#   QEMU      qemu-system-aarch64 (>= 10, from bookworm-backports)
#   KERNEL    Debian's arm64 kernel (vmlinuz: an uncompressed arm64 Image)
#   DTB       its bcm2837-rpi-zero-2-w.dtb, less the Bluetooth node under the PL011 (see below)
#   INITRD    the busybox initramfs: loads the SD host (sdhost; virtio for -M virt) and ext4,
#             mounts the root partition (root=LABEL=rootfs, PARTUUID=... or /dev/...)
#             read-only, switch_root
#   IMAGE     the base SD image: 1 GiB raw, MBR, p1 FAT32 "bootfs" at sector 8192 (64 MiB),
#             p2 ext4 "rootfs" from sector 139264 to the end: Debian bookworm arm64.
#             It is the cache's: copy it (cp --sparse=always) before flashing or booting it.
#   MODULES   the kernel's modules tree (also in the image, /usr/lib/modules/VERSION)
#   KERNEL_VERSION, CMDLINE  the kernel's release and the command line the board boots with
# Logs go to stderr. Needs root (apt, debootstrap, chroot, binfmt_misc). Installs what it
# needs when missing (apt-get, under the lock scripts/debian-rust.sh uses): the
# bookworm-backports suite (/etc/apt/sources.list.d/bookworm-backports.sources),
# qemu-system-arm, qemu-user and qemu-user-binfmt from it (QEMU 10; this replaces bookworm's
# qemu-user 7.2, which scripts/cross-build.sh then finds installed), debootstrap, dosfstools,
# mtools, fdisk, e2fsprogs, cpio, kmod, xz-utils, device-tree-compiler, socat (the board's
# guest forwards); mounts binfmt_misc and registers qemu-aarch64 there for the build's chroot.
#
# The cache is keyed by a hash of this script and the versions of the kernel and busybox
# packages chosen, so a changed script or a new kernel builds anew (4.5-10 min on the
# shared 2-core machine, most of it debootstrap's second stage under qemu-user) and an
# unchanged one answers in a fraction of a second. A build
# is made in a temporary directory beside the cached ones and renamed into place when
# complete: a killed build never leaves a half-made image behind. The two newest builds are
# kept. The Debian packages inside the root file system are whatever bookworm has on the day
# of the build; they are not part of the key (use --rebuild to take newer ones).
#
# The root file system is Debian bookworm arm64 minbase plus systemd, udev, dbus, kmod,
# iproute2, gpiod, ca-certificates, procps, e2fsprogs, dosfstools, curl; made to look like
# Raspberry Pi OS where the agent cares: groups gpio/i2c/spi/video, Pi OS's udev rule giving
# /dev/gpiochip* (and /dev/gpiomem) to group gpio 0660, hostname `doorbell`, an fstab by
# label (/ and /boot/firmware), systemd-networkd doing DHCP on the USB ethernet, a persistent
# journal. What only the TEST BED has, and a user's image never does:
#   - root is logged in automatically on the serial console ttyAMA0
#     (serial-getty@ttyAMA0.service.d/autologin.conf): the console is how the test drives
#     the device. Root's password stays locked, nothing else logs in without one.
#   - RebootWatchdogSec=0: QEMU's BCM2835 watchdog model resets the machine at once when
#     systemd arms it on the way to a reboot (QEMU runs with -no-reboot: it must exit cleanly).
#   - timers that would start heavy work in the middle of a test under emulation are
#     masked (apt-daily*, dpkg-db-backup, e2scrub_all, fstrim).
#   - the device tree has no Bluetooth node under the PL011 UART (/soc/serial@7e201000): with
#     it the kernel gives that UART to the Bluetooth driver (serdev) and there is no ttyAMA0,
#     which QEMU's first serial port is. (Pi OS on a real Zero 2 W keeps Bluetooth on the
#     PL011 and has its console on the mini UART.)
#   - modules for hardware QEMU's raspi3b does not have are blacklisted (their probes fail,
#     after costing seconds of emulated boot): the VideoCore (vc4, vchiq, audio, camera) and
#     `sdhci-iproc` (the Wi-Fi SDIO controller: no card, only time-outs; the SD card is on
#     sdhost, `bcm2835`). The modprobe@ units for drm, dm_mod, loop, efi_pstore and
#     systemd-pstore are masked for the same reason (no display, device mapper, EFI).
set -Eeuo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
SUITE=bookworm
APT_LOCK=/var/lock/doorbell-testbed-apt.lock
# Sectors (512 B) of the SD image: like Raspberry Pi OS's MBR, in a power-of-two card (QEMU
# refuses any other SD size).
IMAGE_SECTORS=$((1024 * 1024 * 2)) # 1 GiB
BOOT_START=8192 BOOT_SECTORS=131072 ROOT_START=139264
DISK_ID=0x5d0d0be1 # the MBR disk identifier: PARTUUID=5d0d0be1-02 is the root partition
DTB_NAME=bcm2837-rpi-zero-2-w.dtb
# The command line tests/device/board.py boots with (also written to the image's cmdline.txt).
CMDLINE="console=ttyAMA0 root=LABEL=rootfs rootwait iomem=relaxed loglevel=3 systemd.show_status=auto"
ROOTFS_INCLUDE=systemd-sysv,udev,dbus,kmod,iproute2,gpiod,ca-certificates,procps,e2fsprogs,dosfstools,curl
# Kernel modules the initramfs loads (with their dependencies, from modules.dep): the SD host
# controller (sdhost; sdhci-iproc must not claim the card first), ext4, and the watchdog,
# which is how a BCM2837 reboots (without it the initramfs's `reboot -f` on failure hangs
# instead of ending QEMU -no-reboot); and the virtio disk, for the same card on -M virt (the
# device test's edge-interrupt step; on the Pi they find no device and stay idle).
INITRD_MODULES=(bcm2835 crc32c_generic ext4 bcm2835_wdt virtio_mmio virtio_blk)
KEEP_BUILDS=2
LISTS_MAX_AGE_DAYS=7

cache="${DOORBELL_DEVICE_CACHE:-/var/cache/doorbell-agent/device}"
rebuild=0 refresh=0
while (($#)); do
    case "$1" in
        --cache) (($# > 1)) || { echo "pi-image.sh: --cache needs a directory" >&2; exit 2; }; cache="$2"; shift ;;
        --rebuild) rebuild=1 ;;
        --refresh) refresh=1 ;;
        -h | --help) sed -n '2,/^set -/p' "$SELF" | sed 's/^# \{0,1\}//;/^set -/d'; exit 0 ;;
        *) echo "pi-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

STEP="start"
log() { printf '[pi-image %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[pi-image %s] error in step "%s": %s\n' "$(date +%T)" "$STEP" "$*" >&2; exit 1; }
step() { STEP="$1"; log "$1"; }
# Any command failing under `set -e` names the step it belongs to.
trap 'rc=$?; printf "[pi-image] failed (exit %s) in step \"%s\" at line %s: %s\n" "$rc" "$STEP" "$LINENO" "$BASH_COMMAND" >&2' ERR
# A signal ends the script through its EXIT trap (which removes a partial build).
trap 'exit 130' INT
trap 'exit 143' TERM HUP

[[ "$(id -u)" == 0 ]] || die "needs root (apt-get, debootstrap, chroot, binfmt_misc)"
[[ "$cache" =~ ^/[A-Za-z0-9/._+-]*$ ]] || die "the cache path must be absolute and plain (letters, digits, / . _ + -): $cache"
mkdir -p "$cache"

# ---------------------------------------------------------------------------------------------
# host tools

# apt-get as root, serialized with the repository's other scripts that install packages
# (scripts/debian-rust.sh's dr_apt_get and scripts/testbed.sh take the same lock).
apt_get() {
    mkdir -p /var/lock
    DEBIAN_FRONTEND=noninteractive flock -w 600 "$APT_LOCK" apt-get "$@"
}

# apt_install [-t RELEASE] PKG...: installs; on failure refreshes the lists and tries again.
apt_install() {
    local log
    log=$(mktemp)
    if ! apt_get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
        apt_get update -qq >>"$log" 2>&1 || true
        if ! apt_get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            die "apt-get install $* failed"
        fi
    fi
    rm -f "$log"
}

# The Debian mirror the systemd test bed uses (TESTBED_MIRROR, else the host's, else
# deb.debian.org), the security archive and the keyring of /etc/apt's debian.sources.
mirror=$(source "$REPO/scripts/testbed.sh" && tb__mirror)
security_mirror="" keyring=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    security_mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)
    keyring=$(awk '/^Signed-By:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
security_mirror="${security_mirror:-${mirror%/debian}/debian-security}"
keyring="${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}"

# Empty when QEMU is missing (a fresh machine), not an error.
qemu_major() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 0
    qemu-system-aarch64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'
}

ensure_backports() {
    grep -rqsE --include='*.list' --include='*.sources' --include=sources.list "^[^#]*$SUITE-backports" \
        /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    log "adding $SUITE-backports ($mirror) to /etc/apt/sources.list.d/$SUITE-backports.sources"
    printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: %s\n' \
        "$mirror" "$SUITE" "$keyring" >"/etc/apt/sources.list.d/$SUITE-backports.sources"
    apt_get update -qq >/dev/null || die "apt-get update after adding $SUITE-backports failed"
}

ensure_host_tools() {
    step "host tools (QEMU >= 10 from $SUITE-backports, debootstrap, mkfs, mtools, ...)"
    # QEMU: qemu-system-arm 10 from backports. Its qemu-system-common breaks bookworm's
    # qemu-user 7.2, so qemu-user (static binaries since 9.x; what scripts/cross-build.sh
    # installs by name, then finds present) and qemu-user-binfmt (/usr/lib/binfmt.d entries,
    # with the F flag, so a chroot needs no copy of the emulator) come from backports too.
    local major
    major=$(qemu_major)
    if [[ -z "$major" || "$major" -lt 10 ]] || [[ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]]; then
        ensure_backports
        log "installing qemu-system-arm qemu-user qemu-user-binfmt from $SUITE-backports"
        apt_install -t "$SUITE-backports" qemu-system-arm qemu-user qemu-user-binfmt
        major=$(qemu_major)
        [[ -n "$major" && "$major" -ge 10 ]] || die "qemu-system-aarch64 is '$(qemu-system-aarch64 --version 2>&1 | head -n1)', need >= 10"
    fi
    local missing=() c
    for c in debootstrap:debootstrap mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk mkfs.ext4:e2fsprogs \
        cpio:cpio depmod:kmod xz:xz-utils gzip:gzip flock:util-linux fdtput:device-tree-compiler \
        socat:socat; do
        command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

# The arm64 emulator for chroots: binfmt_misc mounted and qemu-aarch64 registered with the F
# flag (the kernel opens the interpreter at registration: it works inside any chroot).
ensure_binfmt() {
    step "binfmt_misc: qemu-aarch64"
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    fi
    local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
    if [[ ! -e "$entry" ]]; then
        [[ -r /usr/lib/binfmt.d/qemu-aarch64.conf ]] || die "no /usr/lib/binfmt.d/qemu-aarch64.conf (qemu-user-binfmt)"
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register ||
            die "cannot register qemu-aarch64 with binfmt_misc"
    fi
    grep -qx enabled "$entry" || die "$entry is registered but disabled"
    grep -q '^flags:.*F' "$entry" ||
        die "$entry is registered without the F flag ($(grep '^interpreter' "$entry")): a chroot cannot find the emulator; remove it (echo -1 > $entry) and run again"
}

# ---------------------------------------------------------------------------------------------
# a private apt instance for arm64 (scripts/debian-rust.sh's technique): its own lists and an
# empty dpkg status in the cache, so the machine's dpkg architectures and lists stay as they are.

APT_DIR="$cache/apt"
APT_OPTS=(-o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::State::status=$APT_DIR/status"
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::Etc::Preferences=/nonexistent" -o "Dir::Etc::PreferencesParts=/nonexistent"
    -o "Dir::Cache::Archives=$APT_DIR/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64" -o "APT::Sandbox::User=root"
    -o "Debug::NoLocking=1")

papt_sources() {
    local s
    for s in "$SUITE" "$SUITE-updates" "$SUITE-backports"; do
        echo "deb [signed-by=$keyring] $mirror $s main"
    done
    echo "deb [signed-by=$keyring] $security_mirror $SUITE-security main"
}

# Refreshes the private lists when missing, stale, asked for or pointing elsewhere. A failed
# refresh is fatal only when there are no lists at all.
papt_update() {
    local force="$1" want
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial"
    [[ -e "$APT_DIR/status" ]] || : >"$APT_DIR/status"
    want=$(papt_sources)
    if [[ "$(cat "$APT_DIR/sources.list" 2>/dev/null)" != "$want" ]]; then
        echo "$want" >"$APT_DIR/sources.list"
        rm -f "$APT_DIR/updated"
    fi
    if ((force == 0)) && [[ -n "$(find "$APT_DIR/updated" -mtime -"$LISTS_MAX_AGE_DAYS" 2>/dev/null)" ]]; then
        return 0
    fi
    step "arm64 package lists ($mirror $SUITE{,-updates,-backports}, $security_mirror)"
    if apt-get "${APT_OPTS[@]}" update -qq 2>"$APT_DIR/update.log"; then
        touch "$APT_DIR/updated"
    elif [[ -e "$APT_DIR/updated" ]]; then
        log "warning: refreshing the arm64 package lists failed; using the old ones ($(tail -n1 "$APT_DIR/update.log"))"
    else
        cat "$APT_DIR/update.log" >&2
        die "apt-get update of the private arm64 lists failed"
    fi
}

# (Outputs are captured before they are parsed: an early-exiting reader would fail the
# pipeline with SIGPIPE.)
papt_version() {
    local out
    out=$(apt-cache "${APT_OPTS[@]}" "${@:2}" show --no-all-versions "$1" 2>/dev/null) || return 0
    awk '/^Version:/ && !v { v = $2 } END { print v }' <<<"$out"
}

# The newest Debian arm64 kernel package: bookworm's 6.12 (point release / security), else
# backports' 6.12, else bookworm's 6.1.
resolve_kernel() {
    local meta pkg opts out
    for meta in "linux-image-6.12-arm64|" "linux-image-arm64|-o APT::Default-Release=$SUITE-backports" "linux-image-arm64|"; do
        read -r -a opts <<<"${meta#*|}"
        out=$(apt-cache "${APT_OPTS[@]}" "${opts[@]}" depends "${meta%%|*}" 2>/dev/null) || continue
        pkg=$(awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-arm64$/ && !p { p = $2 } END { print p }' <<<"$out")
        [[ -n "$pkg" ]] || continue
        KPKG="$pkg"
        KPKG_VERSION=$(papt_version "$pkg" "${opts[@]}")
        [[ -n "$KPKG_VERSION" ]] && return 0
    done
    die "no Debian arm64 kernel package in the lists (linux-image-6.12-arm64 / linux-image-arm64)"
}

# The versions chosen from the lists, remembered until the lists change (apt-cache takes
# 1-2 s a call here; a cached run is to cost about a second).
resolve_versions() {
    local memo="$APT_DIR/resolved"
    if [[ -f "$memo" && "$memo" -nt "$APT_DIR/updated" ]] && read -r KPKG KPKG_VERSION BB_VERSION <"$memo" &&
        [[ -n "$BB_VERSION" ]]; then
        return 0
    fi
    resolve_kernel
    BB_VERSION=$(papt_version busybox-static)
    [[ -n "$BB_VERSION" ]] || die "busybox-static:arm64 is not in the lists"
    echo "$KPKG $KPKG_VERSION $BB_VERSION" >"$memo"
}

# ---------------------------------------------------------------------------------------------
# the build

# Removes a (partial) tree: first whatever an interrupted chroot step left mounted in it,
# then the files, never crossing into another file system.
remove_tree() {
    local dir="$1" m
    [[ -e "$dir" ]] || return 0
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$dir"
}

# Prints the modules (paths relative to the modules dir) MODULE needs, dependencies first.
module_closure() {
    local dep="$1" name="$2" path deps d
    path=$(awk -F: -v n="$name" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f); gsub(/-/, "_", f) }
        f == n { print $1; exit }' "$dep")
    [[ -n "$path" ]] || die "module $name is not in $dep"
    deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$dep")
    for d in $deps; do
        d=${d##*/}; d=${d%%.ko*}
        module_closure "$dep" "${d//-/_}"
    done
    echo "$path"
}

build_initrd() {
    local kdir="$1" kver="$2" out="$3" work="$4" m seen=() list=()
    step "initramfs (busybox-static $BB_VERSION; ${INITRD_MODULES[*]})"
    mkdir -p "$work"/{bin,dev,proc,sys,root,lib/modules}
    dpkg-deb -x "$TMP/debs/busybox-static.deb" "$work/bb"
    mv "$work/bb/bin/busybox" "$work/bin/busybox"
    rm -rf "$work/bb"
    ln -s busybox "$work/bin/sh"
    # The kernel opens /dev/console before /init runs; devtmpfs is not mounted yet then.
    mknod -m 600 "$work/dev/console" c 5 1
    for m in "${INITRD_MODULES[@]}"; do
        local paths
        paths=$(module_closure "$kdir/modules.dep" "$m")
        while read -r p; do
            [[ " ${seen[*]} " == *" $p "* ]] && continue
            seen+=("$p")
            local base=${p##*/}; base=${base%%.ko*}
            # busybox insmod reads plain modules only.
            case "$p" in
                *.xz) xz -dc "$kdir/$p" >"$work/lib/modules/$base.ko" ;;
                *.zst) zstd -qdc "$kdir/$p" >"$work/lib/modules/$base.ko" ;;
                *.gz) gzip -dc "$kdir/$p" >"$work/lib/modules/$base.ko" ;;
                *) cp "$kdir/$p" "$work/lib/modules/$base.ko" ;;
            esac
            list+=("$base")
        done <<<"$paths"
    done
    cat >"$work/init" <<EOF
#!/bin/sh
# The test bed's initramfs (scripts/pi-image.sh): load the SD host controller and ext4, wait
# for the root partition, mount it read-only (systemd remounts it from /etc/fstab) and hand
# over to its init. Kernel $kver. On failure: reboot (QEMU runs with -no-reboot, so it exits
# and the harness shows this console); with rd.shell on the command line: a shell instead.
MODULES="${list[*]}"
EOF
    cat >>"$work/init" <<'EOF'
export PATH=/bin
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
root="" fstype=ext4 init=/sbin/init shell=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
        init=*) init="${arg#init=}" ;;
        rd.shell) shell=1 ;;
    esac
done
fail() {
    echo "initramfs: $*" >/dev/console
    if [ "$shell" = 1 ]; then exec sh </dev/console >/dev/console 2>&1; fi
    echo "initramfs: rebooting (add rd.shell to the kernel command line for a shell)" >/dev/console
    sleep 2
    reboot -f
}
for m in $MODULES; do
    insmod "/lib/modules/$m.ko" || fail "insmod $m failed"
done
[ -n "$root" ] || fail "no root= on the kernel command line"
# PARTUUID=DISKID-NN of an MBR disk: the disk identifier at byte 440, the partition number.
find_partuuid() {
    id=$(echo "${1%-*}" | tr A-F a-f) nr=$(echo "${1##*-}" | sed 's/^0*//')
    for d in /sys/block/*; do
        [ -b "/dev/${d##*/}" ] || continue
        disk=$(od -An -tx4 -j440 -N4 "/dev/${d##*/}" 2>/dev/null | tr -d ' ')
        [ "$disk" = "$id" ] || continue
        for p in "$d"/*; do
            [ "$(cat "$p/partition" 2>/dev/null)" = "$nr" ] && echo "/dev/${p##*/}" && return 0
        done
    done
    return 1
}
# Seconds since boot (a loop count would stretch with the emulation's speed).
uptime_s() { read -r up _ </proc/uptime; echo "${up%.*}"; }
deadline=$(($(uptime_s) + 30))
dev=""
while :; do
    case "$root" in
        LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
        PARTUUID=*) dev=$(find_partuuid "${root#PARTUUID=}") ;;
        /dev/*) [ -b "$root" ] && dev="$root" ;;
        *) fail "root=$root: use LABEL=, UUID=, PARTUUID= or /dev/..." ;;
    esac
    [ -n "$dev" ] && break
    [ "$(uptime_s)" -lt "$deadline" ] || fail "root file system $root not found in 30 s; block devices: $(ls /sys/block | tr '\n' ' ')"
    sleep 0.2
done
mkdir -p /root
mount -t "$fstype" -o ro "$dev" /root || fail "cannot mount $dev ($root, $fstype) on /root"
[ -x "/root$init" ] || [ -L "/root$init" ] || fail "no $init on $dev"
umount /proc /sys
mount --move /dev /root/dev || umount /dev
exec switch_root /root "$init"
EOF
    chmod 755 "$work/init"
    (cd "$work" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 >"$out"
}

# Files of the root file system written from here (plain text; the chroot step does the rest).
configure_rootfs() {
    local root="$1" kver="$2"
    step "root file system: Raspberry Pi OS-like configuration"
    echo doorbell >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\tdoorbell\n' >"$root/etc/hosts"
    cat >"$root/etc/fstab" <<'EOF'
# Like Raspberry Pi OS's (which names the partitions by PARTUUID): root and the FAT boot
# partition of the SD card.
proc            /proc           proc    defaults          0       0
LABEL=bootfs    /boot/firmware  vfat    defaults          0       2
LABEL=rootfs    /               ext4    defaults,noatime  0       1
EOF
    mkdir -p "$root/boot/firmware"
    # Raspberry Pi OS's /etc/udev/rules.d/99-com.rules, the parts about GPIO and video.
    cat >"$root/etc/udev/rules.d/99-com.rules" <<'EOF'
# As Raspberry Pi OS has it (/etc/udev/rules.d/99-com.rules): the GPIO character devices and
# /dev/gpiomem belong to group gpio, the camera/video devices to group video.
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
SUBSYSTEM=="bcm2835-gpiomem", KERNEL=="gpiomem", GROUP="gpio", MODE="0660"
KERNEL=="gpiomem", GROUP="gpio", MODE="0660"
SUBSYSTEM=="video4linux", GROUP="video", MODE="0660"
KERNEL=="vchiq", GROUP="video", MODE="0660"
SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660"
SUBSYSTEM=="i2c-dev", GROUP="i2c", MODE="0660"
SUBSYSTEM=="spidev", GROUP="spi", MODE="0660"
EOF
    mkdir -p "$root/etc/systemd/network"
    cat >"$root/etc/systemd/network/50-usb-ethernet.network" <<'EOF'
# DHCP on the USB ethernet (QEMU's usb-net: usb0/eth0/enx... depending on the driver).
[Match]
Name=usb* eth* en*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    mkdir -p "$root/etc/systemd/system.conf.d"
    cat >"$root/etc/systemd/system.conf.d/50-testbed-watchdog.conf" <<'EOF'
# TEST BED ONLY (scripts/pi-image.sh): QEMU's BCM2835 watchdog model resets the machine as
# soon as systemd arms it on the way to a reboot; QEMU runs with -no-reboot and must instead
# see the clean reboot request and exit.
[Manager]
RebootWatchdogSec=0
EOF
    mkdir -p "$root/etc/systemd/journald.conf.d" "$root/var/log/journal"
    cat >"$root/etc/systemd/journald.conf.d/50-persistent.conf" <<'EOF'
# The journal survives reboots and power cuts (/var/log/journal).
[Journal]
Storage=persistent
EOF
    mkdir -p "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d"
    cat >"$root/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf" <<'EOF'
# TEST BED ONLY (scripts/pi-image.sh): the emulated board's serial console logs root in
# without a password; tests/device/board.py drives the device through it. No image for a
# real device has this: there root's password is locked and nothing logs in by itself.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM
EOF
    cat >"$root/etc/sysctl.d/50-console-loglevel.conf" <<'EOF'
# Only critical kernel messages on the console (the serial console is also the test's shell).
kernel.printk = 3 4 1 3
EOF
    cat >"$root/etc/modprobe.d/testbed-qemu-raspi3b.conf" <<'EOF'
# TEST BED ONLY (scripts/pi-image.sh): hardware QEMU's raspi3b does not emulate. Their probes
# fail there after seconds of emulated boot.
# The Arasan SDHCI (mmc@7e300000, the Zero 2 W's Wi-Fi SDIO): no card, only time-outs. The SD
# card is on sdhost (bcm2835).
blacklist sdhci_iproc
# The VideoCore: "vchiq_initialise: Videocore not initialized"; no display, audio or camera.
blacklist vc4
blacklist vchiq
blacklist snd_bcm2835
blacklist bcm2835_mmal_vchiq
blacklist bcm2835_v4l2
blacklist bcm2835_isp
blacklist bcm2835_codec
EOF
    # (dwc2, the USB host controller that Pi OS has built in, is left to udev: loading it
    # early through modules-load.d put 6-8 s of emulated module loading before sysinit.target
    # and made the shell and the network later, not earlier.)
    # No RTC on a Pi: systemd starts the clock at this file's time when it is behind (else at
    # systemd's own build date, months before the image, "password changed in future").
    touch "$root/usr/lib/clock-epoch"
    # The kernel's modules, with the modules.dep made on the build host.
    mkdir -p "$root/usr/lib/modules"
    cp -a "$TMP/kernel/lib/modules/$kver" "$root/usr/lib/modules/"
}

# What needs the image's own programs: run in a chroot through qemu-user (binfmt).
chroot_setup() {
    local root="$1"
    step "root file system: groups, units (chroot)"
    # In a mount namespace of its own: whatever gets mounted in there goes away with it.
    # shellcheck disable=SC2016 # the script is for the chroot's bash
    unshare --mount --propagation private chroot "$root" /bin/bash -euo pipefail -c '
        for g in gpio i2c spi video; do getent group "$g" >/dev/null || groupadd --system "$g"; done
        passwd -l root >/dev/null
        systemctl enable systemd-networkd.service >/dev/null 2>&1
        # Timers that start heavy work (apt, e2scrub, fstrim) at random moments of a test;
        # module loads for hardware the emulated board does not have (display, device mapper,
        # loop devices, EFI pstore).
        for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
            modprobe@drm.service modprobe@dm_mod.service modprobe@loop.service modprobe@efi_pstore.service systemd-pstore.service; do
            systemctl mask "$u" >/dev/null 2>&1
        done
        [ -s /etc/machine-id ] || systemd-machine-id-setup >/dev/null
        rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin
    ' || die "configuring the root file system in the chroot failed"
}

build_image() {
    local root="$1" img="$2" work="$3" kver="$4"
    step "SD image (1 GiB, MBR: bootfs FAT32 + rootfs ext4)"
    mkdir -p "$work/bootfs"
    cp "$TMP/kernel/boot/vmlinuz-$kver" "$work/bootfs/kernel8.img"
    cp "$TMP/out/$DTB_NAME" "$work/bootfs/$DTB_NAME"
    cp "$TMP/out/initrd.img" "$work/bootfs/initramfs8"
    echo "$CMDLINE" >"$work/bootfs/cmdline.txt"
    cat >"$work/bootfs/config.txt" <<EOF
# The device test bed's boot partition (scripts/pi-image.sh), laid out like Raspberry Pi OS's.
# Informational: QEMU's raspi3b has no VideoCore firmware to read this; tests/device/board.py
# gives QEMU the kernel ($kver), device tree, initramfs and cmdline.txt's line itself.
arm_64bit=1
kernel=kernel8.img
device_tree=$DTB_NAME
initramfs initramfs8 followkernel
enable_uart=1
EOF
    local boot_img="$work/p1.img" root_img="$work/p2.img"
    # (Pi OS's label is lowercase too; mkfs.fat's warning about that is dropped.)
    mkfs.vfat -F 32 -n bootfs -i "${DISK_ID#0x}" -C "$boot_img" $((BOOT_SECTORS / 2)) >"$work/mkfs.log" 2>&1 || {
        cat "$work/mkfs.log" >&2
        die "mkfs.vfat of the boot partition failed"
    }
    MTOOLS_SKIP_CHECK=1 mcopy -i "$boot_img" -s "$work/bootfs/"* ::/ || die "mcopy to the boot partition failed"
    truncate -s $(((IMAGE_SECTORS - ROOT_START) * 512)) "$root_img"
    mkfs.ext4 -q -F -L rootfs -E root_owner=0:0 -d "$root" "$root_img" || die "mkfs.ext4 -d of the root partition failed"
    truncate -s $((IMAGE_SECTORS * 512)) "$img"
    printf 'label: dos\nlabel-id: %s\nunit: sectors\n\nstart=%s, size=%s, type=c\nstart=%s, type=83\n' \
        "$DISK_ID" "$BOOT_START" "$BOOT_SECTORS" "$ROOT_START" | sfdisk -q "$img" || die "sfdisk failed"
    # notrunc: into the image at the partitions' offsets; sparse: runs of zeros stay holes.
    dd if="$boot_img" of="$img" bs=4M oflag=seek_bytes seek=$((BOOT_START * 512)) conv=notrunc,sparse status=none
    dd if="$root_img" of="$img" bs=4M oflag=seek_bytes seek=$((ROOT_START * 512)) conv=notrunc,sparse status=none
    rm -f "$boot_img" "$root_img"
}

build() {
    local dest="$1" kver
    TMP="$cache/builds/.tmp-$KEY-$$"
    remove_tree "$TMP"
    mkdir -p "$TMP"/{debs,out}
    trap 'remove_tree "$TMP"' EXIT
    local t0=$SECONDS

    step "download $KPKG $KPKG_VERSION and busybox-static $BB_VERSION (arm64)"
    (cd "$TMP/debs" && apt-get "${APT_OPTS[@]}" download "$KPKG=$KPKG_VERSION" "busybox-static=$BB_VERSION" >/dev/null 2>"$TMP/download.log") || {
        cat "$TMP/download.log" >&2
        die "apt-get download failed (run again with --refresh if the mirror dropped these versions)"
    }
    mv "$TMP"/debs/linux-image-*.deb "$TMP/debs/kernel.deb"
    mv "$TMP"/debs/busybox-static_*.deb "$TMP/debs/busybox-static.deb"

    step "kernel: unpack, depmod"
    dpkg-deb -x "$TMP/debs/kernel.deb" "$TMP/kernel"
    kver=$(ls "$TMP/kernel/lib/modules")
    [[ -n "$kver" && -f "$TMP/kernel/boot/vmlinuz-$kver" ]] || die "unexpected layout of $KPKG (no lib/modules/VERSION or boot/vmlinuz-VERSION)"
    depmod -b "$TMP/kernel" -a "$kver" || die "depmod failed"
    cp "$TMP/kernel/usr/lib/linux-image-$kver/broadcom/$DTB_NAME" "$TMP/out/$DTB_NAME" ||
        die "$KPKG has no broadcom/$DTB_NAME"
    # The PL011 must stay a tty (ttyAMA0, QEMU's first serial port): without this, the kernel
    # hands it to the Bluetooth node's serdev driver and the console shows only HCI commands.
    local children
    children=$(fdtget -l "$TMP/out/$DTB_NAME" /soc/serial@7e201000) || die "$DTB_NAME has no /soc/serial@7e201000"
    if [[ $'\n'"$children"$'\n' == *$'\n'bluetooth$'\n'* ]]; then
        fdtput -r "$TMP/out/$DTB_NAME" /soc/serial@7e201000/bluetooth || die "fdtput -r of the Bluetooth node failed"
    fi
    cp "$TMP/kernel/boot/vmlinuz-$kver" "$TMP/out/vmlinuz-$kver"

    build_initrd "$TMP/kernel/lib/modules/$kver" "$kver" "$TMP/out/initrd.img" "$TMP/initrd"

    step "debootstrap first stage ($SUITE arm64 minbase, $mirror)"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$ROOTFS_INCLUDE" \
        "$SUITE" "$TMP/rootfs" "$mirror" >"$TMP/debootstrap.log" 2>&1 || {
        tail -n 30 "$TMP/debootstrap.log" >&2
        die "debootstrap --foreign failed (log above)"
    }
    step "debootstrap second stage (chroot, qemu-user; 4-9 min)"
    unshare --mount --propagation private chroot "$TMP/rootfs" /debootstrap/debootstrap --second-stage >"$TMP/debootstrap2.log" 2>&1 || {
        tail -n 30 "$TMP/debootstrap2.log" >&2
        [[ -f "$TMP/rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$TMP/rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap --second-stage failed (log above)"
    }
    # The second stage unmounts what it mounted; make sure (mkfs.ext4 -d must not copy /proc).
    awk -v d="$TMP/rootfs/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l

    configure_rootfs "$TMP/rootfs" "$kver"
    chroot_setup "$TMP/rootfs"
    build_image "$TMP/rootfs" "$TMP/out/sd.img" "$TMP/image" "$kver"
    remove_tree "$TMP/rootfs"

    step "into the cache"
    local out="$TMP/final"
    mkdir -p "$out/boot"
    mv "$TMP/out/vmlinuz-$kver" "$TMP/out/$DTB_NAME" "$TMP/out/initrd.img" "$out/boot/"
    mv "$TMP/out/sd.img" "$out/sd.img"
    mkdir -p "$out/modules"
    mv "$TMP/kernel/lib/modules/$kver" "$out/modules/$kver"
    {
        printf 'KERNEL_VERSION=%s\n' "$kver"
        printf 'KERNEL_PACKAGE=%s=%s\n' "$KPKG" "$KPKG_VERSION"
        printf 'BUSYBOX_PACKAGE=busybox-static=%s\n' "$BB_VERSION"
        printf 'BUILT=%s\n' "$(date -u +%FT%TZ)"
        printf 'BUILD_SECONDS=%s\n' "$((SECONDS - t0))"
    } >"$out/manifest"
    remove_tree "$dest"
    mv "$out" "$dest"
    remove_tree "$TMP"
    trap - EXIT
    log "built in $((SECONDS - t0)) s: $dest"
}

# Keeps the KEEP_BUILDS newest complete builds; removes older ones and leftovers of killed
# builds (none can be running: the caller holds the cache lock).
prune() {
    local d n=0
    for d in "$cache"/builds/.tmp-*; do [[ -e "$d" ]] && remove_tree "$d"; done
    while read -r d; do
        n=$((n + 1))
        ((n > KEEP_BUILDS)) && { log "removing old build $d"; remove_tree "$d"; }
    done < <(find "$cache/builds" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
    return 0
}

# ---------------------------------------------------------------------------------------------
# main

ensure_host_tools
# One pi-image.sh at a time per cache: a second one waits and then finds the build done.
mkdir -p "$cache/builds"
exec {lock}>"$cache/.lock"
flock -w 1800 "$lock" || die "timed out after 30 min waiting for $cache/.lock (another pi-image.sh building?)"

papt_update "$refresh"
resolve_versions
KEY=$( { sha256sum <"$SELF"; echo "$KPKG=$KPKG_VERSION busybox-static=$BB_VERSION"; } | sha256sum | cut -c1-16)
dest="$cache/builds/$KEY"
if ((rebuild)) || [[ ! -f "$dest/manifest" ]]; then
    log "building $dest ($KPKG $KPKG_VERSION, busybox-static $BB_VERSION)"
    ensure_binfmt
    build "$dest"
    prune
else
    touch "$dest" # most recently used: kept by prune
    log "cached: $dest ($KPKG $KPKG_VERSION)"
fi

kver=$(sed -n 's/^KERNEL_VERSION=//p' "$dest/manifest")
printf '%s=%q\n' QEMU "$(command -v qemu-system-aarch64)" \
    KERNEL "$dest/boot/vmlinuz-$kver" \
    DTB "$dest/boot/$DTB_NAME" \
    INITRD "$dest/boot/initrd.img" \
    IMAGE "$dest/sd.img" \
    MODULES "$dest/modules/$kver" \
    KERNEL_VERSION "$kver" \
    CMDLINE "$CMDLINE"
