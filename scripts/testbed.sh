#!/usr/bin/env bash
# testbed.sh — test systemd units of doorbell-agent under a real systemd (Debian bookworm,
# systemd 252) booted with systemd-nspawn. Works on machines where systemd is not PID 1.
#
# Two ways to use it:
#
#  1. As a CLI:
#       scripts/testbed.sh run [OPTIONS] SCENARIO [ARGS...]   boot, run scenario, tear down
#       scripts/testbed.sh verify [OPTIONS] [UNIT...]         systemd-analyze verify in the container
#       scripts/testbed.sh shell [OPTIONS]                    boot and open a shell inside
#       scripts/testbed.sh ensure-root | rebuild-root         install tools, build the cached root
#     OPTIONS: --units DIR  (default: <repo>/systemd)      -> /usr/local/lib/systemd/system (ro)
#              --bin DIR    (default: empty dir)           -> /usr/local/bin (ro)
#              --etc DIR    (default: empty writable dir)  -> /etc/doorbell-agent (ro)
#              --results DIR (default: temp dir)           -> /results (rw)
#              --inside     run SCENARIO inside the container instead of on the host
#              --timeout S  scenario time limit (default $TESTBED_SCENARIO_TIMEOUT or 300)
#              --keep       keep the work dir (console log, results) after teardown
#     The exit status of `run` is the scenario's (124 when it timed out, 125 on harness error).
#
#  2. As a library, `source scripts/testbed.sh` (nothing runs when sourced):
#       tb_require_root; tb_install_deps; tb_ensure_root
#       tb_boot [--units DIR] [--bin DIR] [--etc DIR] [--results DIR] [-- NSPAWN_ARGS...]
#       tb_boot --bare [--results DIR] [-- NSPAWN_ARGS...]   nothing of the agent bound in: a
#                             device as it comes (for install.sh, the .deb, deploy.sh)
#       tb_boot --directory DIR [--results DIR] [-- NSPAWN_ARGS...]  boot DIR (e.g. a flashed
#                             image's root) read-write instead of the cached root; implies --bare
#       tb_exec CMD...        run CMD in the container (all namespaces), bounded by TB_EXEC_TIMEOUT
#       tb_sh 'SCRIPT'        bash -c SCRIPT in the container
#       tb_wait_for SECS CMD...  retry CMD (in the container) until it succeeds or SECS pass
#       tb_journal [UNIT]     journal of the current boot (of UNIT)
#       tb_poweroff           clean shutdown (SIGTERM to nspawn);  tb_kill  hard stop (power cut)
#       tb_install_agent      the device's install: user doorbell, A/B layout with the agent from
#                             /usr/local/bin in slot a (kept if present), slotctl in /usr/local/sbin
#       tb_teardown           stop the container, remove its cgroups and work dir (idempotent)
#     tb_boot installs an EXIT trap that calls tb_teardown. One container per shell at a time;
#     boot again after tb_teardown (e.g. to simulate a reboot with a persistent bind).
#     Scenario bookkeeping: pass WHAT; fail WHAT [DETAIL]; check WHAT CMD... (FAIL shows the
#     output of the scenario's own `diag`); eventually SECS CMD... (retry every 0.2 s);
#     PASSED, FAILED and FIGURES (lines for the report) count and collect.
#
# Host-side scenarios (the default for `run`) are started as `bash SCENARIO ARGS...` with these
# variables exported, and get the functions with `source "$TESTBED_LIB"`:
#   TESTBED_LIB TB_NAME TB_PID TB_NSPAWN_PID TB_WORK TB_UNITS_DIR TB_BIN_DIR TB_ETC_DIR
#   TB_RESULTS_DIR TB_REPO   (TB_RESULTS_IN=/results is the results dir as seen inside)
#
# Environment: TESTBED_ROOT (default /var/cache/doorbell-agent/testbed-root),
#   TESTBED_MIRROR (default: the host's Debian mirror or http://deb.debian.org/debian),
#   TB_BOOT_TIMEOUT (60), TB_EXEC_TIMEOUT (120), TESTBED_SCENARIO_TIMEOUT (300),
#   TB_VERBOSE=1 (log more), TB_KEEP_WORK=1 (same as --keep).
#
# Needs root. See /work/shared/SYSTEMD-TESTBED.md for the facts this relies on.

# ---------------------------------------------------------------------------------------------
# configuration

TESTBED_SUITE="${TESTBED_SUITE:-bookworm}"
# busybox: its httpd serves update artifacts to `doorbell-agent update apply URL` inside the
# container (which has only a loopback network). openssh-server: deploy.sh's test reaches
# containers over ssh (sshd is installed disabled; that test starts it).
TESTBED_INCLUDE="${TESTBED_INCLUDE:-systemd,systemd-sysv,dbus,curl,ca-certificates,busybox,openssh-server}"
# Bump when the root's recipe (tb__build_root) changes: cached roots are then rebuilt. The
# version is part of the root's path, so branches with different recipes (built in parallel
# on one machine) each keep their own root instead of rebuilding each other's.
TESTBED_ROOT_RECIPE_VERSION=3
TESTBED_ROOT="${TESTBED_ROOT:-/var/cache/doorbell-agent/testbed-root-v$TESTBED_ROOT_RECIPE_VERSION}"
TB_BOOT_TIMEOUT="${TB_BOOT_TIMEOUT:-60}"
TB_EXEC_TIMEOUT="${TB_EXEC_TIMEOUT:-120}"
TB_RESULTS_IN=/results
TB_CT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TESTBED_LIB="$(readlink -f "${BASH_SOURCE[0]}")"
TB_REPO="${TB_REPO:-$(cd "$(dirname "$TESTBED_LIB")/.." && pwd)}"
export TESTBED_LIB TB_REPO TB_RESULTS_IN
[[ -v TB_CGROUPS ]] || TB_CGROUPS=()

# ---------------------------------------------------------------------------------------------
# scenario bookkeeping (the systemd tests and the shipping scenarios)

PASSED=0
FAILED=0
FIGURES=()
pass() { PASSED=$((PASSED + 1)); printf 'PASS: %s\n' "$1"; }
fail() {
    FAILED=$((FAILED + 1)); printf 'FAIL: %s\n' "$1"
    [[ -n "${2:-}" ]] && printf '%s\n' "$2" | sed 's/^/      | /'
    return 0
}
# check WHAT CMD...: PASS when CMD succeeds, else FAIL with the scenario's `diag` output.
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what" "$(diag)"; fi; }
# Retries CMD... every 0.2 s for up to SECS.
eventually() { local i; for ((i = 0; i < $1 * 5; i++)); do "${@:2}" && return 0; sleep 0.2; done; return 1; }

# ---------------------------------------------------------------------------------------------
# small helpers

tb_log() { printf '[testbed %s] %s\n' "$(date +%T)" "$*" >&2; }
tb_vlog() { [[ "${TB_VERBOSE:-0}" == 1 ]] && tb_log "$@"; return 0; }
tb_die() { tb_log "ERROR: $*"; return 125; }

tb_require_root() {
    if [[ "$(id -u)" != 0 ]]; then
        tb_die "must run as root (systemd-nspawn, cgroups, nsenter)"; return
    fi
}

# Read a monotonic-ish clock in milliseconds.
tb_now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

# ---------------------------------------------------------------------------------------------
# host tools

# Install systemd-nspawn, debootstrap and the small tools this script uses, when missing.
tb_install_deps() {
    local missing=() c
    for c in systemd-nspawn:systemd-container debootstrap:debootstrap nsenter:util-linux \
             flock:util-linux pgrep:procps timeout:coreutils; do
        command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    # unique package names
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    tb_log "installing ${missing[*]} (apt-get)"
    mkdir -p /var/lock
    local log; log=$(mktemp)
    if ! (
        # Serialize with other testbed runs; apt's own lock would make the loser fail.
        flock -w 600 9 || { echo "timed out waiting for the apt lock"; exit 1; }
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
    ) 9>/var/lock/doorbell-testbed-apt.lock >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        tb_die "apt-get install ${missing[*]} failed"; return
    fi
    rm -f "$log"
    for c in systemd-nspawn debootstrap nsenter flock pgrep timeout; do
        command -v "$c" >/dev/null 2>&1 || { tb_die "$c still missing after install"; return; }
    done
}

# The Debian mirror: TESTBED_MIRROR, else the host's configured one, else deb.debian.org.
tb__mirror() {
    if [[ -n "${TESTBED_MIRROR:-}" ]]; then echo "$TESTBED_MIRROR"; return; fi
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$m" && -r /etc/apt/sources.list ]]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ && $3 ~ /^bookworm$/ { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------------------------
# cached root file system

tb__recipe() {
    printf 'version=%s\nsuite=%s\nvariant=minbase\ninclude=%s\narch=%s\n' \
        "$TESTBED_ROOT_RECIPE_VERSION" "$TESTBED_SUITE" "$TESTBED_INCLUDE" "$(uname -m)"
}

# Marker written only after a complete build; its content is the recipe.
tb__root_ok() {
    [[ -d "$TESTBED_ROOT/usr/lib/systemd" && -f "$TESTBED_ROOT.ready" ]] &&
        [[ "$(cat "$TESTBED_ROOT.ready")" == "$(tb__recipe)" ]]
}

# Removes a (partial) root: first whatever an interrupted debootstrap left mounted in it
# (/proc, /sys), then the files, never crossing into another file system.
tb__remove_tree() {
    local dir="$1" m
    [[ -e "$dir" ]] || return 0
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    rm -rf --one-file-system "$dir"
}

tb__build_root() {
    local new="$TESTBED_ROOT.new" mirror t0
    mirror=$(tb__mirror)
    t0=$(date +%s)
    tb_log "building $TESTBED_SUITE minbase root in $TESTBED_ROOT from $mirror (about 30-60 s)"
    rm -f "$TESTBED_ROOT.ready"
    tb__remove_tree "$new"
    # In its own session, so that an interrupted run takes the whole debootstrap down with it
    # (a half-built root is never marked ready and is rebuilt by the next run anyway).
    local pid rc
    setsid -w debootstrap --variant=minbase --include="$TESTBED_INCLUDE" "$TESTBED_SUITE" "$new" "$mirror" \
        >"$TESTBED_ROOT.debootstrap.log" 2>&1 </dev/null &
    pid=$!
    trap 'kill -TERM -- -'"$pid"' 2>/dev/null; exit 130' INT
    trap 'kill -TERM -- -'"$pid"' 2>/dev/null; exit 143' TERM
    wait "$pid"; rc=$?
    trap - INT TERM
    if [[ $rc != 0 ]]; then
        tail -n 20 "$TESTBED_ROOT.debootstrap.log" >&2
        tb__remove_tree "$new"
        tb_die "debootstrap failed (exit $rc, log: $TESTBED_ROOT.debootstrap.log)"; return
    fi
    # Make the image lean and fast to boot; runs see it through a volatile overlay only.
    rm -rf "$new"/var/cache/apt/archives/*.deb "$new"/var/lib/apt/lists/*
    # No login prompt on the container console: nobody reads it, it just adds noise.
    ln -sf /dev/null "$new/etc/systemd/system/console-getty.service"
    # sshd only where a test starts it (deploy.sh's), not in every container.
    rm -f "$new/etc/systemd/system/multi-user.target.wants/ssh.service" "$new/etc/systemd/system/sshd.service"
    # Default journal limits are plenty; make the journal readable right away with -b.
    mkdir -p "$new/usr/local/lib/systemd/system" "$new/etc/doorbell-agent" "$new$TB_RESULTS_IN"
    tb__remove_tree "$TESTBED_ROOT"
    mv "$new" "$TESTBED_ROOT"
    tb__recipe >"$TESTBED_ROOT.ready.tmp"
    sync -f "$TESTBED_ROOT.ready.tmp" 2>/dev/null || sync
    mv "$TESTBED_ROOT.ready.tmp" "$TESTBED_ROOT.ready"
    tb_log "root built in $(( $(date +%s) - t0 )) s"
}

# tb__lock -s|-x : take the root lock (shared: using the root, exclusive: building it).
tb__lock() {
    flock -n "$1" "$TB_ROOT_LOCK_FD" && return 0
    tb_log "waiting for another run to finish with $TESTBED_ROOT (lock $TESTBED_ROOT.lock)"
    flock -w 900 "$1" "$TB_ROOT_LOCK_FD" || { tb_die "timed out waiting for $TESTBED_ROOT.lock"; return; }
}

# Make sure the cached root exists and is complete; build it (once, under a lock) if not.
# Afterwards this shell holds a shared lock on the root (fd TB_ROOT_LOCK_FD) so that no other
# run rebuilds it while a container uses it as its overlay's lower layer.
tb_ensure_root() {
    tb_require_root || return
    tb_install_deps || return
    mkdir -p "$(dirname "$TESTBED_ROOT")"
    if [[ -z "${TB_ROOT_LOCK_FD:-}" ]]; then
        exec {TB_ROOT_LOCK_FD}>>"$TESTBED_ROOT.lock"
    fi
    tb__lock -s || return
    tb__root_ok && return 0
    # Upgrade to an exclusive lock to build; re-check, another run may have built it meanwhile.
    flock -u "$TB_ROOT_LOCK_FD"
    tb__lock -x || return
    if ! tb__root_ok; then
        tb__build_root || { flock -u "$TB_ROOT_LOCK_FD"; return 125; }
    fi
    flock -s "$TB_ROOT_LOCK_FD"   # downgrade
}

tb_rebuild_root() {
    tb_require_root || return
    tb_install_deps || return
    mkdir -p "$(dirname "$TESTBED_ROOT")"
    [[ -n "${TB_ROOT_LOCK_FD:-}" ]] || exec {TB_ROOT_LOCK_FD}>>"$TESTBED_ROOT.lock"
    tb__lock -x || return
    rm -f "$TESTBED_ROOT.ready"
    tb__build_root || return
    flock -s "$TB_ROOT_LOCK_FD"
}

# ---------------------------------------------------------------------------------------------
# cgroups: give each nspawn its own cgroup in the named systemd hierarchy and the unified one,
# otherwise parallel runs collide in a shared /payload cgroup.

tb__cgroup_parents() {
    local line path
    if [[ -d /sys/fs/cgroup/systemd && -d /sys/fs/cgroup/unified ]]; then
        # hybrid (cgroup v1 + unified): both hierarchies, relative to our current cgroup
        path=$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup/systemd${path%/}"
        path=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup/unified${path%/}"
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        line=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup${line%/}"
    elif [[ -d /sys/fs/cgroup/systemd ]]; then
        path=$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup/systemd${path%/}"
    fi
}

tb__cgroups_create() {
    local parent
    TB_CGROUPS=()
    while read -r parent; do
        [[ -n "$parent" ]] || continue
        mkdir -p "$parent/$TB_NAME" || { tb_die "cannot create cgroup $parent/$TB_NAME"; return; }
        TB_CGROUPS+=("$parent/$TB_NAME")
    done < <(tb__cgroup_parents)
    tb_vlog "cgroups: ${TB_CGROUPS[*]}"
}

# Kill whatever is left in our cgroups, then remove them, deepest first.
tb__cgroups_remove() {
    local cg pids
    for cg in "${TB_CGROUPS[@]}"; do
        [[ -d "$cg" ]] || continue
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
            [[ -z "$pids" ]] && break
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null
            sleep 0.1
        done
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
            [[ -d "$cg" ]] || break
            sleep 0.1
        done
        [[ -d "$cg" ]] && tb_log "warning: could not remove cgroup $cg"
    done
    TB_CGROUPS=()
}

# ---------------------------------------------------------------------------------------------
# container lifecycle

tb__alive() { [[ -n "${TB_NSPAWN_PID:-}" ]] && kill -0 "$TB_NSPAWN_PID" 2>/dev/null; }

tb__fail_boot() {
    tb_log "boot failed: $*"
    if [[ -f "$TB_WORK/console.log" ]]; then
        tb_log "last lines of the container console:"
        tail -n 40 "$TB_WORK/console.log" >&2
    fi
    tb_teardown
    return 125
}

# On SIGINT/SIGTERM/SIGHUP: stop a running scenario, then exit (the EXIT trap tears down).
tb__on_signal() {
    tb_log "signal received; tearing down"
    [[ -n "${TB_SCENARIO_PID:-}" ]] && kill -TERM "$TB_SCENARIO_PID" 2>/dev/null
    exit "$1"
}

# tb_boot [--bare | --directory DIR] [--units DIR] [--bin DIR] [--etc DIR] [--results DIR] [-- EXTRA_NSPAWN_ARGS...]
tb_boot() {
    local units="${TB_UNITS_DIR:-}" bin="${TB_BIN_DIR:-}" etc="${TB_ETC_DIR:-}"
    local results="${TB_RESULTS_DIR:-}" extra=() t0 deadline state bare=0 root="$TESTBED_ROOT" fs=(--volatile=overlay)
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --bare) bare=1; shift ;;
            --directory) bare=1; root=$(readlink -f "$2"); fs=(); shift 2 ;;
            --units) units="$2"; shift 2 ;;
            --bin) bin="$2"; shift 2 ;;
            --etc) etc="$2"; shift 2 ;;
            --results) results="$2"; shift 2 ;;
            --) shift; extra=("$@"); break ;;
            *) tb_die "tb_boot: unknown argument $1"; return ;;
        esac
    done
    if tb__alive; then tb_die "tb_boot: a container ($TB_NAME) is already running"; return; fi
    tb_ensure_root || return
    t0=$(tb_now_ms)

    TB_NAME="tb-doorbell-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    TB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-testbed.XXXXXX") || return 125
    chmod 755 "$TB_WORK"
    [[ -n "$units" ]] || { units="$TB_WORK/units"; mkdir -p "$units"; }
    [[ -n "$bin" ]] || { bin="$TB_WORK/bin"; mkdir -p "$bin"; }
    [[ -n "$etc" ]] || { etc="$TB_WORK/etc"; mkdir -p "$etc"; }
    [[ -n "$results" ]] || { results="$TB_WORK/results"; mkdir -p "$results"; }
    local d
    for d in "$units" "$bin" "$etc" "$results"; do
        [[ -d "$d" ]] || { tb_die "not a directory: $d"; return; }
    done
    TB_UNITS_DIR=$(readlink -f "$units"); TB_BIN_DIR=$(readlink -f "$bin")
    TB_ETC_DIR=$(readlink -f "$etc"); TB_RESULTS_DIR=$(readlink -f "$results")
    # Unprivileged service users inside must be able to traverse these (mktemp makes 0700).
    chmod a+rx "$TB_BIN_DIR" "$TB_ETC_DIR" 2>/dev/null
    export TB_NAME TB_WORK TB_UNITS_DIR TB_BIN_DIR TB_ETC_DIR TB_RESULTS_DIR
    local binds=(--bind-ro="$TB_UNITS_DIR:/usr/local/lib/systemd/system" --bind-ro="$TB_BIN_DIR:/usr/local/bin"
        --bind-ro="$TB_ETC_DIR:/etc/doorbell-agent")
    if ((bare)); then binds=(); fi

    tb__cgroups_create || { tb__fail_boot "cgroup setup"; return; }
    trap 'tb_teardown' EXIT
    trap 'tb__on_signal 130' INT
    trap 'tb__on_signal 143' TERM
    trap 'tb__on_signal 129' HUP

    tb_vlog "booting $TB_NAME (work dir $TB_WORK)"
    (
        # Move this (launching) shell into the container's own cgroups, then become nspawn.
        for cg in "${TB_CGROUPS[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs" || exit 125; done
        exec {TB_ROOT_LOCK_FD}>&- 2>/dev/null
        exec systemd-nspawn --quiet --register=no --keep-unit --private-network \
            "${fs[@]}" --console=read-only -M "$TB_NAME" -D "$root" \
            "${binds[@]}" \
            --bind="$TB_RESULTS_DIR:$TB_RESULTS_IN" \
            "${extra[@]}" \
            -b -- systemd.unit=multi-user.target
    ) </dev/null >"$TB_WORK/console.log" 2>&1 &
    TB_NSPAWN_PID=$!
    export TB_NSPAWN_PID

    # 1. the container's PID 1 is the systemd child of nspawn
    deadline=$(( $(date +%s) + TB_BOOT_TIMEOUT ))
    TB_PID=""
    while [[ -z "$TB_PID" ]]; do
        tb__alive || { tb__fail_boot "systemd-nspawn exited"; return; }
        (( $(date +%s) < deadline )) || { tb__fail_boot "no systemd in the container after ${TB_BOOT_TIMEOUT}s"; return; }
        TB_PID=$(pgrep -P "$TB_NSPAWN_PID" -x systemd | head -n1)
        [[ -n "$TB_PID" ]] || sleep 0.05
    done
    export TB_PID
    # 2. its manager socket
    until nsenter -t "$TB_PID" -m test -S /run/systemd/private 2>/dev/null; do
        tb__alive || { tb__fail_boot "systemd-nspawn exited"; return; }
        (( $(date +%s) < deadline )) || { tb__fail_boot "no /run/systemd/private after ${TB_BOOT_TIMEOUT}s"; return; }
        sleep 0.05
    done
    # 3. boot finished
    state=$(TB_EXEC_TIMEOUT=$(( deadline - $(date +%s) + 1 )) tb_exec systemctl is-system-running --wait 2>&1)
    case "$state" in
        running) ;;
        degraded)
            tb_log "warning: container is degraded; failed units:"
            tb_exec systemctl --failed --no-legend --plain >&2 ;;
        *) tb__fail_boot "system state '$state'"; return ;;
    esac
    tb_log "container $TB_NAME up in $(( $(tb_now_ms) - t0 )) ms"
}

# Run a command inside the container: all namespaces, root and cwd of its PID 1, clean env.
# Extra variables: tb_exec env VAR=value CMD...  Bounded by TB_EXEC_TIMEOUT seconds.
tb_exec() {
    [[ -n "${TB_PID:-}" ]] || { tb_die "tb_exec: no container"; return; }
    timeout --kill-after=5 "${TB_EXEC_TIMEOUT}" \
        nsenter -t "$TB_PID" -a -r -w -- \
        /usr/bin/env -i PATH="$TB_CT_PATH" HOME=/root LANG=C.UTF-8 TERM=dumb \
        SYSTEMD_PAGER=cat PAGER=cat SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 "$@"
}

tb_sh() { tb_exec /bin/bash -c "$@"; }

# tb_wait_for SECS CMD... : retry CMD in the container every 0.1 s until it succeeds.
tb_wait_for() {
    local secs="$1" deadline; shift
    deadline=$(( $(tb_now_ms) + secs * 1000 ))
    until TB_EXEC_TIMEOUT="$secs" tb_exec "$@" >/dev/null 2>&1; do
        (( $(tb_now_ms) < deadline )) || return 1
        sleep 0.1
    done
}

# Installs the agent as on a device: the `doorbell` user (groups gpio, video), the A/B layout
# /opt/doorbell-agent/{slots/a/doorbell-agent,current -> slots/a} from /usr/local/bin/doorbell-agent
# (an existing layout is kept, e.g. a persistent one across a simulated power cut), and
# doorbell-slotctl in /usr/local/sbin. Idempotent.
tb_install_agent() {
    tb_sh '
        set -e
        getent group gpio  >/dev/null || groupadd --system gpio
        getent group video >/dev/null || groupadd --system video
        id doorbell >/dev/null 2>&1 || useradd --system --user-group --groups gpio,video \
            --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin doorbell
        install -D -m 0755 /usr/local/bin/doorbell-slotctl /usr/local/sbin/doorbell-slotctl
        if [ ! -e /opt/doorbell-agent/current ]; then
            install -D -m 0755 /usr/local/bin/doorbell-agent /opt/doorbell-agent/slots/a/doorbell-agent
            ln -sfn slots/a /opt/doorbell-agent/current
        fi'
}

tb_journal() {
    if [[ $# -gt 0 ]]; then
        tb_exec journalctl -b --no-pager -o short-precise -u "$1" "${@:2}"
    else
        tb_exec journalctl -b --no-pager -o short-precise
    fi
}

# Clean shutdown: SIGTERM to nspawn powers the container off. Falls back to tb_kill.
tb_poweroff() {
    local deadline
    tb__alive || return 0
    kill -TERM "$TB_NSPAWN_PID" 2>/dev/null
    deadline=$(( $(tb_now_ms) + ${1:-20} * 1000 ))
    while tb__alive && (( $(tb_now_ms) < deadline )); do sleep 0.05; done
    if tb__alive; then
        tb_log "warning: container did not power off in ${1:-20}s; killing it"
        tb_kill
    fi
    wait "$TB_NSPAWN_PID" 2>/dev/null
    TB_PID=""
    return 0
}

# Hard stop, like pulling the power: SIGKILL nspawn and everything in its cgroups.
tb_kill() {
    local cg
    [[ -n "${TB_NSPAWN_PID:-}" ]] && kill -KILL "$TB_NSPAWN_PID" 2>/dev/null
    for cg in "${TB_CGROUPS[@]}"; do
        [[ -d "$cg" ]] || continue
        # shellcheck disable=SC2046
        kill -KILL $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null) 2>/dev/null
    done
    [[ -n "${TB_NSPAWN_PID:-}" ]] && wait "$TB_NSPAWN_PID" 2>/dev/null
    TB_PID=""
    return 0
}

# Stop the container and clean everything up. Safe to call more than once.
tb_teardown() {
    local rc=$?
    if [[ -n "${TB_NSPAWN_PID:-}" ]]; then
        tb_poweroff 20
        tb_vlog "container $TB_NAME stopped"
    fi
    TB_NSPAWN_PID=""
    [[ ${#TB_CGROUPS[@]} -gt 0 ]] && tb__cgroups_remove
    if [[ -n "${TB_WORK:-}" && -d "$TB_WORK" ]]; then
        if [[ "${TB_KEEP_WORK:-0}" == 1 ]]; then
            tb_log "work dir kept: $TB_WORK"
        else
            rm -rf "$TB_WORK"
            # Directories tb_boot made in the work dir are gone: not the next boot's defaults.
            local v
            for v in TB_UNITS_DIR TB_BIN_DIR TB_ETC_DIR TB_RESULTS_DIR; do
                [[ "${!v:-}" != "$TB_WORK"/* ]] || unset "$v"
            done
        fi
    fi
    TB_WORK=""
    trap - EXIT INT TERM HUP
    return $rc
}

# ---------------------------------------------------------------------------------------------
# CLI

tb__usage() {
    sed -n '2,/^# Needs root/p' "$TESTBED_LIB" | sed 's/^# \{0,1\}//'
}

# tb_run [--units D] [--bin D] [--etc D] [--results D] [--inside] [--timeout S] [--keep] SCENARIO [ARGS]
tb_run() {
    local boot=() inside=0 tmo="${TESTBED_SCENARIO_TIMEOUT:-300}" scenario rc t0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --units|--bin|--etc|--results) boot+=("$1" "$2"); shift 2 ;;
            --inside) inside=1; shift ;;
            --timeout) tmo="$2"; shift 2 ;;
            --keep) TB_KEEP_WORK=1; shift ;;
            --) shift; break ;;
            -*) tb_die "run: unknown option $1"; return ;;
            *) break ;;
        esac
    done
    [[ $# -ge 1 ]] || { tb_die "run: missing SCENARIO"; return; }
    scenario=$(readlink -f "$1"); shift
    [[ -f "$scenario" ]] || { tb_die "run: no such scenario: $scenario"; return; }
    [[ " ${boot[*]} " == *" --units "* ]] || boot+=(--units "$TB_REPO/systemd")
    t0=$(tb_now_ms)
    tb_boot "${boot[@]}" || return 125
    tb_log "running scenario $(basename "$scenario") ($( ((inside)) && echo inside || echo host-driven), limit ${tmo}s)"
    set +e
    # In the background + wait, so that a signal to this shell is handled at once.
    if ((inside)); then
        cp "$scenario" "$TB_RESULTS_DIR/.scenario"
        TB_EXEC_TIMEOUT="$tmo" tb_exec env TB_RESULTS="$TB_RESULTS_IN" \
            /bin/bash "$TB_RESULTS_IN/.scenario" "$@" <&0 &
    else
        timeout --kill-after=10 "$tmo" bash "$scenario" "$@" <&0 &
    fi
    TB_SCENARIO_PID=$!
    wait "$TB_SCENARIO_PID"
    rc=$?
    TB_SCENARIO_PID=""
    rm -f "$TB_RESULTS_DIR/.scenario"
    [[ $rc == 124 ]] && tb_log "scenario timed out after ${tmo}s"
    tb_teardown
    tb_log "scenario exit status $rc (total $(( $(tb_now_ms) - t0 )) ms)"
    return $rc
}

tb_main() {
    set -uo pipefail
    local cmd="${1:-help}"; [[ $# -gt 0 ]] && shift
    case "$cmd" in
        run) tb_run "$@" ;;
        verify)
            local boot=() units=()
            while [[ $# -gt 0 ]]; do
                case "$1" in
                    --units|--bin|--etc) boot+=("$1" "$2"); shift 2 ;;
                    *) units+=("$1"); shift ;;
                esac
            done
            [[ " ${boot[*]} " == *" --units "* ]] || boot+=(--units "$TB_REPO/systemd")
            local script; script=$(mktemp --suffix=.sh "${TMPDIR:-/tmp}/verify-units.XXXXXX")
            # shellcheck disable=SC2016
            printf '%s\n' 'set -u; cd /usr/local/lib/systemd/system' \
                '[ $# -gt 0 ] || set -- *.service *.timer *.path *.socket *.target' \
                'rc=0; for u in "$@"; do [ -e "$u" ] || continue; echo "== systemd-analyze verify $u"' \
                '  systemd-analyze verify "$u" || rc=1; done; exit $rc' >"$script"
            tb_run --inside "${boot[@]}" "$script" "${units[@]}"
            local rc=$?; rm -f "$script"; return $rc ;;
        shell)
            tb_boot "$@" || return 125
            tb_log "interactive shell in $TB_NAME; exit to tear down"
            nsenter -t "$TB_PID" -a -r -w -- /usr/bin/env -i PATH="$TB_CT_PATH" HOME=/root \
                TERM="${TERM:-xterm}" LANG=C.UTF-8 /bin/bash -l
            ;;
        ensure-root) tb_ensure_root && tb_log "root ready: $TESTBED_ROOT" ;;
        rebuild-root) tb_rebuild_root ;;
        help|-h|--help) tb__usage ;;
        *) tb__usage >&2; return 2 ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    tb_main "$@"
    exit $?
fi
