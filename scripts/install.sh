#!/usr/bin/env bash
# install.sh — installs doorbell-agent on this device (as root), from a bundle made by
# scripts/make-bundle.sh (this script, the agent and doorbell-slotctl for the device's CPU,
# the units, config.toml, sysusers.conf, TARGET, VERSION, the face models in models/, optionally
# a signed doorbell-agent.dbu).
#
#   install.sh [--config FILE] [--public-key KEY] [--no-start]    install, or upgrade in place
#   install.sh --uninstall [--purge]                             remove (data and config kept)
#   install.sh --detect                                          print what this device needs
#   install.sh --check [--root DIR]                              only check the bundle fits
#   install.sh --root DIR [--config FILE] [--public-key KEY]     into a mounted image (flash.sh)
#   install.sh --packaged [--uninstall]                          the .deb's maintainer scripts
#
#   --from DIR        the bundle (default: this script's directory)
#   --config FILE     the configuration to install when /etc/doorbell-agent/config.toml does not
#                     exist (default: the bundle's commented config.toml). An existing one is
#                     never overwritten.
#   --public-key KEY  the update key (base64) for [update] public_key, added to the config when
#                     it has none; a config with another key is an error
#   --no-start        install and enable, but leave the service stopped
#   --purge           with --uninstall: also the data, the config and the `doorbell` user
#
# What it does, each step only when needed (a re-run changes nothing and says so):
#  - checks the bundle is for this device: dpkg architecture + CPU (ARMv6/ARMv7), glibc >= 2.36
#  - the system user `doorbell` in the groups gpio and video (created where absent), from
#    sysusers.conf with systemd-sysusers
#  - doorbell-slotctl in /usr/local/sbin, the units in /usr/local/lib/systemd/system
#  - the face models (bundle's models/) in /usr/local/share/doorbell-agent/models, where the
#    agent looks for them by default; they are data of every version, not of a slot
#  - the A/B layout on a fresh install: the agent in /opt/doorbell-agent/slots/a, `current` and
#    `committed` -> slots/a; afterwards the slots belong to doorbell-slotctl and are never
#    written here: an upgrade goes through the A/B path (`doorbell-agent update apply` of the
#    bundle's signed doorbell-agent.dbu: trial, commit or automatic rollback)
#  - /usr/local/bin/doorbell-agent -> /opt/doorbell-agent/current/doorbell-agent
#  - /etc/doorbell-agent/config.toml (root:doorbell 0640) when absent, then check-config
#  - enables and starts doorbell-agent.service, waits until it is up and prints its status
# It never stops or restarts the agent while an update is staged, on trial, or being
# installed by slotctl (new units then apply at the agent's next restart).
#
# Exit codes: 0 done (or nothing to do), 1 failed, 2 usage, 3 wrong device (architecture,
# CPU or glibc), 78 the configuration is invalid (nothing started).
set -euo pipefail
umask 022

# (Also run as `bash -s -- --detect < install.sh`, without a file name.)
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]:-.}")" && pwd)
UNIT=doorbell-agent.service
MIN_GLIBC=2.36

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$1" >&2; exit "${2:-1}"; }
# A problem with the agent rather than the install: fatal, except from dpkg (--packaged), where
# a failing maintainer script would only wedge apt; the package is installed either way and the
# unit's own failure handling (rollback, restarts) takes over.
problem() {
    if ((PACKAGED)); then printf 'install.sh: warning: %s\n' "$1" >&2; return 0; fi
    die "$@"
}
usage() { sed -n '2,/^# Exit codes/p' "$SELF_DIR/install.sh" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

# ------------------------------------------------------------------------------------------
# device detection (also run over ssh by deploy.sh: `bash -s -- --detect < install.sh`)

# The ELF machine of a file: aarch64, arm, x86_64, ... (from e_ident[EI_CLASS] and e_machine).
elf_machine() {
    local magic class machine
    magic=$(od -An -c -N4 "$1" 2>/dev/null | tr -d ' ')
    [[ "$magic" == '177ELF' ]] || { echo none; return; }
    class=$(od -An -tu1 -j4 -N1 "$1" | tr -d ' ')
    machine=$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')
    case "$class:$machine" in
        2:183) echo aarch64 ;;
        1:40) echo arm ;;
        2:62) echo x86_64 ;;
        *) echo "elf$class-$machine" ;;
    esac
}

# The Rust target this device needs. `uname -m` is not used: 32-bit Raspberry Pi OS runs a
# 64-bit kernel on a Pi 3/4/5 (uname says aarch64, userland is armhf). ARMv6 (Pi Zero/1) and
# ARMv7+ share the armhf architecture; the CPU model tells them apart (an ARM1176 reports
# "CPU architecture: 7", so that field cannot).
device_target() {
    local arch
    arch=$(dpkg --print-architecture 2>/dev/null) || arch=unknown
    case "$arch" in
        arm64) echo aarch64-unknown-linux-gnu ;;
        armhf)
            if grep -qiE '^model name.*(ARMv6|\(v6l\))' /proc/cpuinfo; then
                echo arm-unknown-linux-gnueabihf
            else
                echo armv7-unknown-linux-gnueabihf
            fi ;;
        amd64) echo x86_64-unknown-linux-gnu ;;
        *) echo "unsupported-$arch" ;;
    esac
}

glibc_version() { getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'; }

version_ge() { [[ "$(printf '%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# key=value facts about this device and what is installed (deploy.sh parses them).
detect() {
    local model glibc st committed="" trial="" slot=""
    model=$(tr -d '\0' 2>/dev/null </proc/device-tree/model || true)
    [[ -n "$model" ]] || model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
    glibc=$(glibc_version)
    say "dpkg_arch=$(dpkg --print-architecture 2>/dev/null || echo unknown)"
    say "model=${model:-unknown}"
    say "target=$(device_target)"
    say "glibc=${glibc:-unknown}"
    if [[ -n "$glibc" ]] && version_ge "$glibc" "$MIN_GLIBC"; then say "glibc_ok=yes"; else say "glibc_ok=no"; fi
    if [[ -d /run/systemd/system ]]; then say "systemd=yes"; else say "systemd=no"; fi
    if [[ -L /opt/doorbell-agent/current ]]; then
        # The slot state: "0.1.0 committed in slot a" or "trial 0.2.0 in slot b, 2 tries left",
        # then "  slot a: 0.1.0 (...)" per slot.
        st=$(slotctl_cmd status 2>/dev/null || true)
        if [[ "${st%%$'\n'*}" =~ ^([^ ]+)\ committed\ in\ slot\ ([ab])$ ]]; then
            committed=${BASH_REMATCH[1]} slot=${BASH_REMATCH[2]}
        elif [[ "$st" =~ ^trial\ ([^ ]+)\ in\ slot\ ([ab]) ]]; then
            trial=${BASH_REMATCH[1]} slot=${BASH_REMATCH[2]}
            # The committed slot is the other one.
            committed=$(sed -n "s/^  slot $([[ $slot == a ]] && echo b || echo a): \([^ ]*\) .*/\1/p" <<<"$st")
        else
            # Installed but never started (no slot state yet): ask the binary.
            committed=$(/opt/doorbell-agent/current/doorbell-agent --version 2>/dev/null | awk '{print $2}')
            slot=$(readlink /opt/doorbell-agent/current | sed 's|.*/||')
        fi
        say "installed=${committed:-unknown}"
    else
        say "installed=none"
    fi
    say "trial=${trial:-none}"
    say "slot=${slot:-none}"
    say "active=$(systemctl is-active "$UNIT" 2>/dev/null || true)"
}

slotctl_cmd() {
    local s
    for s in /usr/local/sbin/doorbell-slotctl /usr/sbin/doorbell-slotctl; do
        [[ -x "$s" ]] && { "$s" "$@"; return; }
    done
    return 1
}

# ------------------------------------------------------------------------------------------
# arguments

FROM="$SELF_DIR" ROOT="" CONFIG_SRC="" PUBLIC_KEY="" START=1 MODE=install PURGE=0 PACKAGED=0
while (($#)); do
    case "$1" in
        --from) FROM=$(cd "${2:?--from needs a directory}" && pwd); shift ;;
        --root) ROOT=$(cd "${2:?--root needs a directory}" && pwd); shift ;;
        --config) CONFIG_SRC=$(readlink -f "${2:?--config needs a file}"); shift ;;
        --public-key) PUBLIC_KEY="${2:?--public-key needs a key}"; shift ;;
        --no-start) START=0 ;;
        --uninstall) MODE=uninstall ;;
        --purge) PURGE=1 ;;
        --packaged) PACKAGED=1 ;;
        --detect) detect; exit 0 ;;
        --check) MODE=check ;;
        -h | --help) usage 0 ;;
        *) say "install.sh: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done
((PURGE == 0)) || [[ "$MODE" == uninstall ]] || die "--purge goes with --uninstall" 2
[[ -z "$ROOT" || "$MODE" != uninstall ]] || die "--root installs into an image; uninstall there is not supported" 2
[[ -z "$ROOT" || $PACKAGED == 0 ]] || die "--root and --packaged do not mix" 2
[[ "$(id -u)" == 0 ]] || die "must run as root (sudo $0 ...)"
if [[ "$PUBLIC_KEY" == *[!A-Za-z0-9+/=]* ]]; then die "--public-key: base64 (or hex) expected" 2; fi

# Paths. ROOT prefixes every path written (an image); the system's own paths otherwise.
# The .deb owns slotctl, the units, the sysusers file, the CLI link and the config (conffile).
OPT=/opt/doorbell-agent
ETC=/etc/doorbell-agent
CONFIG=$ETC/config.toml
SLOTCTL_STATE=/var/lib/doorbell-slotctl
DATA_DEFAULT=/var/lib/doorbell-agent
if ((PACKAGED)); then
    SLOTCTL=/usr/sbin/doorbell-slotctl
    UNIT_DIR=/lib/systemd/system
    SYSUSERS=/usr/lib/sysusers.d/doorbell-agent.conf
    CLI_LINK=/usr/bin/doorbell-agent
else
    SLOTCTL=/usr/local/sbin/doorbell-slotctl
    UNIT_DIR=/usr/local/lib/systemd/system
    MODELS=/usr/local/share/doorbell-agent/models
    SYSUSERS=/usr/local/lib/sysusers.d/doorbell-agent.conf
    CLI_LINK=/usr/local/bin/doorbell-agent
fi
CLI=$OPT/current/doorbell-agent

CHANGES=0
changed() { CHANGES=$((CHANGES + 1)); say "  $*"; }

# Copies SRC to ROOT/DEST with MODE unless it is there already: a temp file beside it, then
# rename, so a running doorbell-slotctl or a reader never sees a half-written file.
put_file() {
    local src="$1" dest="$ROOT$2" mode="$3"
    if [[ -f "$dest" && ! -L "$dest" ]] && cmp -s "$src" "$dest" && [[ "$(stat -c %a "$dest")" == "${mode#0}" ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    cp "$src" "$dest.tmp.$$"
    chmod "$mode" "$dest.tmp.$$"
    sync -f "$dest.tmp.$$" 2>/dev/null || true
    mv -f "$dest.tmp.$$" "$dest"
    changed "installed $2"
}

# ROOT/LINK -> TARGET, swapped atomically (new link + rename) unless it points there already.
put_link() {
    local target="$1" link="$ROOT$2"
    [[ -L "$link" && "$(readlink "$link")" == "$target" ]] && return 0
    mkdir -p "$(dirname "$link")"
    ln -sfn "$target" "$link.tmp.$$"
    mv -Tf "$link.tmp.$$" "$link"
    changed "linked $2 -> $target"
}

systemd_running() { [[ -z "$ROOT" && -d /run/systemd/system ]]; }

# Why the agent must not be stopped or restarted now (an update is underway), or nothing.
update_busy() {
    local st data state
    # (Captured whole: a reader that stops early makes slotctl abort on the closed pipe.)
    st=$(slotctl_cmd status 2>/dev/null || true)
    if [[ "$st" == trial* ]]; then echo "an update is on trial ($st)"; return; fi
    data=$(data_dir)
    if [[ -e "$data/update/staged" ]]; then echo "an update is staged in $data/update/staged"; return; fi
    if systemd_running; then
        state=$(systemctl show -p ActiveState --value "$UNIT" 2>/dev/null || true)
        # activating: ExecStartPre (slotctl installing a slot) or the restart after exit 75.
        if [[ "$state" == activating || "$state" == deactivating ]]; then echo "the agent is $state"; fi
    fi
}

# The data directory the agent uses (data_dir of the config, else the default).
data_dir() {
    local d=""
    [[ -f "$ROOT$CONFIG" ]] && d=$(sed -n 's/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT$CONFIG" | head -n1)
    echo "${d:-$DATA_DEFAULT}"
}

# ------------------------------------------------------------------------------------------
# install steps

check_bundle() {
    local f
    for f in doorbell-agent VERSION; do
        [[ -f "$FROM/$f" ]] || die "$FROM/$f is missing: is $FROM a bundle (scripts/make-bundle.sh)?"
    done
    if ((!PACKAGED)); then
        for f in doorbell-slotctl config.toml sysusers.conf TARGET systemd/$UNIT; do
            [[ -f "$FROM/$f" ]] || die "$FROM/$f is missing: is $FROM a bundle (scripts/make-bundle.sh)?"
        done
    fi
    BUNDLE_VERSION=$(cat "$FROM/VERSION")
}

# The bundle must be for this device (or, with --root, for the image's architecture).
check_device() {
    local want have glibc machine image_machine
    ((PACKAGED)) && return 0   # dpkg checked the architecture
    want=$(cat "$FROM/TARGET")
    machine=$(elf_machine "$FROM/doorbell-agent")
    case "$want" in
        aarch64-*) [[ "$machine" == aarch64 ]] ;;
        arm*) [[ "$machine" == arm ]] ;;
        x86_64-*) [[ "$machine" == x86_64 ]] ;;
        *) false ;;
    esac || die "the bundle says $want but its doorbell-agent is an $machine binary"
    if [[ -n "$ROOT" ]]; then
        image_machine=$(elf_machine "$ROOT/usr/bin/env")
        [[ "$image_machine" == "$machine" ]] || die "the image's programs are $image_machine, the bundle ($want) is $machine" 3
        # The image's glibc, from its libc's version string.
        glibc=$(cat "$ROOT"/usr/lib/*/libc.so.6 2>/dev/null | grep -aoE 'release version [0-9]+\.[0-9]+' | head -n1 | awk '{print $3}') || true
        if [[ -z "$glibc" ]] || ! version_ge "$glibc" "$MIN_GLIBC"; then
            die "the image's glibc (${glibc:-not found}) is older than $MIN_GLIBC (Raspberry Pi OS bookworm or newer needed)" 3
        fi
        if [[ "$want" == armv7-* ]]; then
            say "note: an armhf image also boots a Pi Zero / Pi 1 (ARMv6), where this ARMv7 build cannot run"
        fi
        return 0
    fi
    if [[ "$(dpkg-query -W -f='${Status}' doorbell-agent 2>/dev/null)" == *" installed" ]]; then
        die "doorbell-agent is installed from its .deb here: upgrade it with apt/dpkg, or remove the package first" 3
    fi
    have=$(device_target)
    [[ "$have" == "$want" ]] || die "this device needs $have (dpkg: $(dpkg --print-architecture 2>/dev/null), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); the bundle is $want" 3
    glibc=$(glibc_version)
    if [[ -z "$glibc" ]] || ! version_ge "$glibc" "$MIN_GLIBC"; then
        die "glibc ${glibc:-unknown} is older than $MIN_GLIBC (Raspberry Pi OS bookworm or newer needed; build for older systems with cross)" 3
    fi
    [[ -d /run/systemd/system ]] || die "systemd is not running here (the agent runs as a systemd service)"
}

# The `doorbell` user and the gpio/video groups, declared in sysusers.conf.
ensure_user() {
    local before after conf="$FROM/sysusers.conf"
    if ((PACKAGED)); then conf=$SYSUSERS; else put_file "$conf" "$SYSUSERS" 0644; fi
    before=$(cat "$ROOT/etc/passwd" "$ROOT/etc/group" | sha256sum)
    # (systemd-sysusers reads the file from the host's view also with --root.)
    systemd-sysusers ${ROOT:+--root="$ROOT"} "$conf" 2>/dev/null
    after=$(cat "$ROOT/etc/passwd" "$ROOT/etc/group" | sha256sum)
    [[ "$before" == "$after" ]] || changed "user doorbell and groups gpio, video (systemd-sysusers)"
    grep -q '^doorbell:' "$ROOT/etc/passwd" || die "systemd-sysusers did not create the user doorbell"
    local g
    for g in gpio video; do
        grep -Eq "^$g:[^:]*:[^:]*:(.*,)?doorbell(,|$)" "$ROOT/etc/group" || die "doorbell is not in the group $g"
    done
}

install_programs() {
    ((PACKAGED)) && return 0
    local u have
    put_file "$FROM/doorbell-slotctl" "$SLOTCTL" 0755
    for u in "$FROM"/systemd/*; do
        put_file "$u" "$UNIT_DIR/$(basename "$u")" 0644
    done
    # Units an older bundle had and this one has not.
    for have in "$ROOT$UNIT_DIR"/doorbell-agent*; do
        [[ -e "$have" ]] || continue
        [[ -e "$FROM/systemd/$(basename "$have")" ]] && continue
        rm -f "$have"
        changed "removed $UNIT_DIR/$(basename "$have") (not in this bundle)"
    done
    put_link "$CLI" "$CLI_LINK"
    install_models
}

# The face models of the bundle (none in a bundle made with --no-models, e.g. for a build
# without the `faces` feature). The .deb ships its own in /usr/share.
install_models() {
    local m
    for m in "$FROM"/models/*.onnx; do
        [[ -f "$m" ]] && put_file "$m" "$MODELS/$(basename "$m")" 0644
    done
}

# A fresh install seeds slot A; an existing layout belongs to doorbell-slotctl.
seed_slots() {
    if [[ -L "$ROOT$OPT/current" ]]; then
        SEEDED=0
        return 0
    fi
    if [[ -e "$ROOT$SLOTCTL_STATE/state.json" ]]; then
        # A state without a layout describes slots that are gone (an install by hand, removed
        # by hand): slotctl would distrust the new slot A against it.
        mv "$ROOT$SLOTCTL_STATE/state.json" "$ROOT$SLOTCTL_STATE/state.json.stale-$(date +%s)"
        changed "moved aside the slot state of a removed install"
    fi
    put_file "$FROM/doorbell-agent" "$OPT/slots/a/doorbell-agent" 0755
    put_link slots/a "$OPT/committed"
    put_link slots/a "$OPT/current"
    SEEDED=1
}

# Adds `public_key = "KEY"` to [update] of the config at $1 when it has no key.
add_public_key() {
    local file="$1" have tmp
    have=$(awk '/^\[/ { s = $0 } s == "[update]" && /^[[:space:]]*public_key[[:space:]]*=/ { sub(/^[^=]*=[[:space:]]*/, ""); gsub(/"/, ""); print; exit }' "$file")
    if [[ -n "$have" ]]; then
        [[ "$have" == "$PUBLIC_KEY" ]] || die "$CONFIG has another [update] public_key ($have); edit it by hand to change the update key"
        return 0
    fi
    tmp="$file.tmp.$$"
    # Replace the commented example line of [update], else add the key under [update], else
    # add the section.
    awk -v key="$PUBLIC_KEY" '
        /^\[/ { if (s == "[update]" && !done) { print "public_key = \"" key "\""; done = 1 } s = $0 }
        s == "[update]" && !done && /^#[[:space:]]*public_key[[:space:]]*=/ { print "public_key = \"" key "\""; done = 1; next }
        { print }
        END {
            if (s == "[update]" && !done) { print "public_key = \"" key "\""; done = 1 }
            if (!done) { print ""; print "[update]"; print "public_key = \"" key "\"" }
        }' "$file" >"$tmp"
    chmod --reference="$file" "$tmp"
    chown --reference="$file" "$tmp"
    mv -f "$tmp" "$file"
    changed "set [update] public_key in $CONFIG"
}

install_config() {
    local src="${CONFIG_SRC:-$FROM/config.toml}" gid before=$CHANGES
    if ((!PACKAGED)) && [[ ! -e "$ROOT$CONFIG" ]]; then
        [[ -f "$src" ]] || die "no configuration at $src"
        mkdir -p "$ROOT$ETC"
        cp "$src" "$ROOT$CONFIG.tmp.$$"
        mv -f "$ROOT$CONFIG.tmp.$$" "$ROOT$CONFIG"
        changed "installed $CONFIG (from $src)"
    elif [[ -n "$CONFIG_SRC" ]] && ! cmp -s "$CONFIG_SRC" "$ROOT$CONFIG"; then
        say "  kept the existing $CONFIG (--config $CONFIG_SRC not installed over it)"
    fi
    [[ -f "$ROOT$CONFIG" ]] || die "$CONFIG is missing"
    [[ -z "$PUBLIC_KEY" ]] || add_public_key "$ROOT$CONFIG"
    # Readable by the service, by nobody else: it may hold the broker's password.
    gid=$(awk -F: '$1 == "doorbell" { print $3 }' "$ROOT/etc/group")
    if [[ "$(stat -c '%u:%g %a' "$ROOT$CONFIG")" != "0:$gid 640" ]]; then
        chown "0:$gid" "$ROOT$CONFIG"
        chmod 0640 "$ROOT$CONFIG"
        changed "$CONFIG is root:doorbell 0640"
    fi
    ((CHANGES == before)) || RESTART_NEEDED=1
    if [[ -z "$ROOT" ]]; then
        local out
        if ! out=$("$CLI" -c "$CONFIG" check-config 2>&1 >/dev/null); then
            problem "$CONFIG is invalid, the agent is not started: $out" 78
            START=0
        fi
    fi
}

# Enables the service, then starts it (fresh) or restarts it when its units or slotctl
# changed (not while an update is underway).
enable_and_start() {
    local busy
    if [[ -n "$ROOT" ]]; then
        if [[ "$(systemctl --root="$ROOT" is-enabled "$UNIT" 2>/dev/null)" != enabled ]]; then
            systemctl --root="$ROOT" enable "$UNIT" 2>/dev/null
            changed "enabled $UNIT (starts at boot)"
        fi
        return 0
    fi
    if ! systemd_running; then
        # Only with --packaged (check_device wants systemd otherwise): the package is installed
        # into a chroot or an image being built. Enabling works on the files; it starts at boot.
        if [[ "$(systemctl is-enabled "$UNIT" 2>/dev/null)" != enabled ]]; then
            systemctl enable "$UNIT" 2>/dev/null
            changed "enabled $UNIT (systemd is not running here: the agent starts at boot)"
        fi
        START=0
        return 0
    fi
    # dpkg replaced the agent's unit file underneath (a package upgrade): restart for it.
    [[ "$(systemctl show -p NeedDaemonReload --value "$UNIT" 2>/dev/null)" != yes ]] || RESTART_NEEDED=1
    if ((CHANGES > 0 || PACKAGED)); then systemctl daemon-reload; fi
    if [[ "$(systemctl is-enabled "$UNIT" 2>/dev/null)" != enabled ]]; then
        systemctl enable "$UNIT" 2>/dev/null
        changed "enabled $UNIT"
    fi
    ((START)) || return 0
    if ! systemctl -q is-active "$UNIT"; then
        busy=$(update_busy)
        if [[ -n "$busy" ]]; then
            say "  not starting the agent: $busy"
            return 0
        fi
        systemctl reset-failed "$UNIT" 2>/dev/null || true
        if systemctl start "$UNIT"; then changed "started $UNIT"; else problem "systemctl start $UNIT failed: see journalctl -u $UNIT"; fi
    elif ((RESTART_NEEDED)); then
        busy=$(update_busy)
        if [[ -n "$busy" ]]; then
            say "  the changes apply at the agent's next restart: not restarting it now, $busy"
        else
            if systemctl restart "$UNIT"; then
                changed "restarted $UNIT (its units, slotctl or config changed)"
            else
                problem "systemctl restart $UNIT failed: see journalctl -u $UNIT"
            fi
        fi
    fi
}

# An agent newer than the committed one goes through the A/B path: the bundle's signed
# artifact is verified, installed into the inactive slot by slotctl and put on trial.
upgrade_agent() {
    local installed busy args=()
    ((SEEDED)) && return 0
    [[ -z "$ROOT" ]] || { say "  the image already has an A/B layout: its slots are left alone"; return 0; }
    installed=$(detect | sed -n 's/^installed=//p')
    [[ "$installed" != "$BUNDLE_VERSION" ]] || return 0
    if version_ge "$installed" "$BUNDLE_VERSION"; then
        say "  the device runs doorbell-agent $installed, newer than this bundle's $BUNDLE_VERSION: slots left alone"
        say "  (to go back: doorbell-agent update apply --force $FROM/doorbell-agent.dbu)"
        return 0
    fi
    if [[ ! -f "$FROM/doorbell-agent.dbu" ]]; then
        say "  the device runs doorbell-agent $installed, this bundle has $BUNDLE_VERSION without a signed artifact:"
        say "  the slots are only updated through the A/B path (make the bundle with --key, or run"
        say "  doorbell-agent update apply FILE.dbu)"
        return 0
    fi
    busy=$(update_busy)
    if [[ -n "$busy" ]]; then
        say "  doorbell-agent $BUNDLE_VERSION not applied now: $busy. Once it is decided:"
        if ((PACKAGED)); then say "  dpkg-reconfigure doorbell-agent"; else say "  doorbell-agent update apply $FROM/doorbell-agent.dbu"; fi
        return 0
    fi
    ((START)) || { say "  --no-start: doorbell-agent $BUNDLE_VERSION not applied"; return 0; }
    # From the .deb's postinst: return once the trial runs (apt must not wait for the soak).
    ((PACKAGED)) && args+=(--no-wait)
    say "  updating doorbell-agent $installed -> $BUNDLE_VERSION through the A/B path"
    CHANGES=$((CHANGES + 1))
    "$CLI" -c "$CONFIG" update apply "${args[@]}" "$FROM/doorbell-agent.dbu" 2>&1 | sed 's/^/    /'
    local rc=${PIPESTATUS[0]}
    # From dpkg, a refused update (no key on the device, another key) leaves the package
    # installed with its new slotctl and units, and the agent as it was.
    ((rc == 0)) || problem "update to $BUNDLE_VERSION did not succeed; the agent stays on $installed (doorbell-slotctl status; journalctl -u $UNIT)"
}

# Waits for the service to be up, then prints what it says.
report() {
    local state status i
    if [[ -n "$ROOT" ]]; then
        say "installed doorbell-agent $BUNDLE_VERSION into $ROOT ($CHANGES changes); it starts at the image's first boot"
        return 0
    fi
    if ((START)); then
        for ((i = 0; i < 100; i++)); do
            state=$(systemctl show -p ActiveState --value "$UNIT")
            [[ "$state" == activating ]] || break
            sleep 0.3
        done
    fi
    state=$(systemctl show -p ActiveState --value "$UNIT")
    status=$(systemctl show -p StatusText --value "$UNIT")
    if ((CHANGES == 0)); then say "nothing to do: doorbell-agent is installed and up to date"; fi
    local st
    st=$(slotctl_cmd status 2>/dev/null) || st="no slot state yet"
    say "doorbell-agent: $state, ${st%%$'\n'*}${status:+; $status}"
    if ((START)) && [[ "$state" != active ]]; then problem "$UNIT is $state: see journalctl -u $UNIT"; fi
}

do_install() {
    check_bundle
    check_device
    say "installing doorbell-agent $BUNDLE_VERSION${ROOT:+ into $ROOT}"
    ensure_user
    local before=$CHANGES
    install_programs
    ((CHANGES == before)) || RESTART_NEEDED=1
    seed_slots
    install_config
    enable_and_start
    upgrade_agent
    report
}

# ------------------------------------------------------------------------------------------
# uninstall

do_uninstall() {
    local u
    say "removing doorbell-agent"
    if systemd_running; then
        for u in "$UNIT" doorbell-agent-commit.path doorbell-agent-trial.timer; do
            systemctl disable --now "$u" 2>/dev/null || true
        done
        systemctl reset-failed 'doorbell-agent*' 2>/dev/null || true
    fi
    if ((!PACKAGED)); then
        for u in "$UNIT_DIR"/doorbell-agent*; do
            [[ -e "$u" ]] && rm -f "$u" && changed "removed $u"
        done
        for u in "$SLOTCTL" "$CLI_LINK" "$SYSUSERS"; do
            if [[ -e "$u" || -L "$u" ]]; then rm -f "$u"; changed "removed $u"; fi
        done
        [[ -e "$MODELS" ]] && rm -rf "$(dirname "$MODELS")" && changed "removed $(dirname "$MODELS")"
        systemd_running && systemctl daemon-reload
    fi
    # The slots and their state are the program, not data.
    for u in "$OPT" "$SLOTCTL_STATE"; do
        [[ -e "$u" ]] && rm -rf "$u" && changed "removed $u"
    done
    if ((PURGE)); then
        local data
        data=$(data_dir)
        for u in "$data" "$ETC"; do
            [[ -e "$u" ]] && rm -rf "$u" && changed "removed $u"
        done
        if getent passwd doorbell >/dev/null; then
            userdel doorbell 2>/dev/null || true
            getent group doorbell >/dev/null && groupdel doorbell 2>/dev/null
            changed "removed the user doorbell (the groups gpio and video stay)"
        fi
    else
        say "  kept $ETC and $(data_dir) (--purge removes them and the user doorbell)"
    fi
    ((CHANGES > 0)) || say "nothing to do: doorbell-agent is not installed"
}

SEEDED=0 RESTART_NEEDED=0
case "$MODE" in
    install) do_install ;;
    check) check_bundle; check_device; say "the bundle ($(cat "$FROM/TARGET"), $BUNDLE_VERSION) fits ${ROOT:-this device}" ;;
    uninstall) do_uninstall ;;
esac
