#!/usr/bin/env bash
# Scenario: the Debian package on a device, with dpkg (what apt runs underneath: the same
# maintainer scripts with the same arguments) in a bare testbed container. The packages are
# amd64 builds (scripts/build-deb.sh --target x86_64-unknown-linux-gnu) of the same
# Cargo.toml metadata and maintainer scripts as the arm64/armhf ones, which a container on
# this machine cannot run; the arm64 package's contents are checked when it was built.
# Host-driven; run by scripts/test-ship.sh (WORK: bin-VERSION dirs, bundles, release.key).
#
#   bash tests/ship/deb.sh WORK

# shellcheck disable=SC2016  # single-quoted scripts run in the container, on purpose
set -uo pipefail
W=$(readlink -f "${1:?usage: deb.sh WORK}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$REPO/scripts/testbed.sh"
# shellcheck source=tests/ship/common.sh
source "$REPO/tests/ship/common.sh"
tb_require_root || exit 125
export TB_EXEC_TIMEOUT=150
KEY=$(cat "$W/release.pub")
X86=x86_64-unknown-linux-gnu

echo "== the .deb"
mkdir -p "$W/debs"
deb() { # VERSION REVISION -> path
    "$REPO/scripts/build-deb.sh" --target "$X86" --bin-dir "$W/bin-$1" --key "$W/release.key" --version "$1" \
        --revision "$2" --out "$W/debs" | awk '{print $1}'
}
t0=$(tb_now_ms)
for v in 0.1.0:1 0.2.0:1 0.4.0:1; do
    d=$(deb "${v%:*}" "${v#*:}") || { fail "build-deb.sh $v"; exit 1; }
done
FIGURES+=("three amd64 .debs with build-deb.sh (cargo-deb cached, signing included): $(( $(tb_now_ms) - t0 )) ms")
chmod -R a+rX "$W/debs"
pkg() { echo "/ship/debs/doorbell-agent_$1_amd64.deb"; }
contents=$(dpkg-deb -c "$W/debs/doorbell-agent_0.1.0-1_amd64.deb")
want=(./usr/lib/doorbell-agent/doorbell-agent ./usr/lib/doorbell-agent/install.sh ./usr/lib/doorbell-agent/VERSION
    ./usr/lib/doorbell-agent/doorbell-agent.dbu ./usr/sbin/doorbell-slotctl ./lib/systemd/system/doorbell-agent.service
    ./lib/systemd/system/doorbell-agent-rollback.service ./lib/systemd/system/doorbell-agent-commit.path
    ./lib/systemd/system/doorbell-agent-commit.service ./lib/systemd/system/doorbell-agent-trial.service
    ./lib/systemd/system/doorbell-agent-trial.timer ./usr/lib/sysusers.d/doorbell-agent.conf ./etc/doorbell-agent/config.toml
    "./usr/bin/doorbell-agent -> /opt/doorbell-agent/current/doorbell-agent")
absent=""
for f in "${want[@]}"; do grep -qF -- "$f" <<<"$contents" || absent+="$f "; done
if [[ -z "$absent" ]] && ! grep -q /usr/local <<<"$contents"; then pass "package contents: agent, install.sh, artifact, slotctl in /usr/sbin, 6 units, sysusers, config, CLI link; nothing in /usr/local"; else fail "package contents (missing: $absent)" "$contents"; fi
check "conffile: /etc/doorbell-agent/config.toml" test "$(dpkg-deb -I "$W/debs/doorbell-agent_0.1.0-1_amd64.deb" conffiles)" = /etc/doorbell-agent/config.toml
unit_text=$(dpkg-deb --fsys-tarfile "$W/debs/doorbell-agent_0.1.0-1_amd64.deb" | tar -xO ./lib/systemd/system/doorbell-agent.service)
check "packaged unit runs /usr/sbin/doorbell-slotctl" grep -q '^ExecStartPre=+/usr/sbin/doorbell-slotctl pre-start' <<<"$unit_text"

tb_boot --bare -- --bind-ro="$W:/ship" || exit 125
dpkg_i() { tb_exec env DEBIAN_FRONTEND=noninteractive dpkg -i "$@" 2>&1; }

# --- 1. first install ------------------------------------------------------------------------
out=$(dpkg_i "$(pkg 0.1.0-1)"); rc=$?
if [[ $rc == 0 && "$out" == *"doorbell-agent: active"* ]]; then pass "dpkg -i 0.1.0-1: configured, agent active"; else fail "dpkg -i 0.1.0-1 (exit $rc)" "$out"; fi
check "postinst: user doorbell in gpio, video; A/B layout with slot a; config root:doorbell 0640" tb_sh '
    id -nG doorbell | grep -qw gpio && id -nG doorbell | grep -qw video &&
    test "$(readlink /opt/doorbell-agent/current) $(readlink /opt/doorbell-agent/committed)" = "slots/a slots/a" &&
    cmp -s /usr/lib/doorbell-agent/doorbell-agent /opt/doorbell-agent/slots/a/doorbell-agent &&
    test "$(stat -c "%U:%G %a" /etc/doorbell-agent/config.toml)" = "root:doorbell 640" &&
    test "$(systemctl is-enabled doorbell-agent)" = enabled'
check "face models in /usr/share/doorbell-agent/models" tb_sh 'test -s /usr/share/doorbell-agent/models/face_detection_short_range.onnx &&
    test -s /usr/share/doorbell-agent/models/dlib_face_recognition_resnet_v1.onnx'
check "doorbell-agent on PATH (/usr/bin link), slot state 0.1.0 in slot a" test "$(tb_exec doorbell-agent --version) / $(slot_state)" = "doorbell-agent 0.1.0 / 0.1.0 committed in slot a"
# The installer edits the conffile: simulated button (no GPIO in a container), short soak, key.
tb_sh 'sed -i "s/^# backend = \"rppal\".*/backend = \"simulated\"/; s/^# soak = \"60s\".*/soak = \"4s\"/; s|^# public_key = .*|public_key = \"'"$KEY"'\"|" /etc/doorbell-agent/config.toml &&
       systemctl restart doorbell-agent'
check "edited conffile: agent healthy" eventually 20 healthy

# --- 2. package upgrade carrying a newer agent: through the A/B path, dpkg does not wait -----
t0=$(tb_now_ms)
out=$(dpkg_i "$(pkg 0.2.0-1)"); rc=$?
ms=$(( $(tb_now_ms) - t0 ))
if [[ $rc == 0 && "$out" == *"0.1.0 -> 0.2.0 through the A/B path"* && "$out" == *"trial 0.2.0 in slot b"* ]]; then
    pass "dpkg -i 0.2.0-1: the packaged agent goes on trial; dpkg returned after $ms ms, before the soak"
    FIGURES+=("package upgrade carrying a new agent: dpkg -i returns after $ms ms (trial running)")
else
    fail "dpkg -i 0.2.0-1 (exit $rc)" "$out
$(diag)"
fi
check "0.2.0 commits after its soak (slot b)" eventually 40 slot_is "0.2.0 committed in slot b"
check "the edited conffile is kept" tb_sh 'grep -q "^backend = \"simulated\"" /etc/doorbell-agent/config.toml && ! ls /etc/doorbell-agent/*.dpkg-* 2>/dev/null'

# --- 3. `apt upgrade` during a trial: nothing stopped, the newer package's agent deferred ------
tb_exec doorbell-agent update apply --no-wait /ship/bundle-0.3.0/doorbell-agent.dbu >/dev/null 2>&1
eventually 30 on_trial_healthy 0.3.0
trial=$(slot_state); pid=$(unit_prop MainPID)
out=$(dpkg_i "$(pkg 0.4.0-1)"); rc=$?
if [[ $rc == 0 && "$out" == *"0.4.0 not applied now: an update is on trial"* && "$out" == *"dpkg-reconfigure doorbell-agent"* ]]; then
    pass "dpkg -i 0.4.0-1 during the trial of 0.3.0: installed, its agent deferred"
else
    fail "dpkg -i during a trial (exit $rc; state was $trial)" "$out"
fi
check "the agent on trial was not stopped (MainPID $pid) and used no try ($trial)" test "$(unit_prop MainPID) $(slot_state)" = "$pid $trial"
check "the trial finishes: 0.3.0 committed" eventually 40 slot_is "0.3.0 committed in slot a"
out=$(tb_exec dpkg-reconfigure doorbell-agent 2>&1); rc=$?
if [[ $rc == 0 && "$out" == *"0.3.0 -> 0.4.0 through the A/B path"* ]]; then pass "dpkg-reconfigure afterwards applies the deferred 0.4.0"; else fail "dpkg-reconfigure (exit $rc)" "$out"; fi
check "0.4.0 committed (slot b), healthy" eventually 40 slot_is "0.4.0 committed in slot b"
check "agent healthy on 0.4.0" eventually 20 healthy
pid=$(unit_prop MainPID)
out=$(dpkg_i "$(pkg 0.4.0-1)"); rc=$?
check "reinstalling the same package: exit 0, the agent is not restarted" test "$rc $(unit_prop MainPID) $(slot_state)" = "0 $pid 0.4.0 committed in slot b"

# --- 4. remove: stopped, program gone; config and data kept ---------------------------------
check "the agent's history has the update (imported from slotctl's outcome)" eventually 10 history_has successful '0\.4\.0'
out=$(tb_exec dpkg -r doorbell-agent 2>&1); rc=$?
check "dpkg -r: exit 0" test "$rc" = 0
check "removed: no unit, no process, no slots or slot state, no slotctl" tb_sh '
    test "$(systemctl show -p LoadState --value doorbell-agent)" = not-found && ! pgrep -x doorbell-agent &&
    ! test -e /opt/doorbell-agent && ! test -e /var/lib/doorbell-slotctl && ! test -e /usr/sbin/doorbell-slotctl'
check "removed: conffile, data and user kept" tb_sh 'grep -q "^backend = \"simulated\"" /etc/doorbell-agent/config.toml && test -d /var/lib/doorbell-agent/db && id doorbell >/dev/null'
out=$(dpkg_i "$(pkg 0.1.0-1)"); rc=$?
if [[ $rc == 0 && "$out" == *"doorbell-agent: active"* ]]; then pass "reinstall after remove: fresh slot a, agent active"; else fail "reinstall after remove (exit $rc)" "$out"; fi
check "reinstall: healthy with the kept config" eventually 20 healthy
check "reinstall: the kept store has the update history" history_has successful '0\.4\.0'

# --- 5. purge ------------------------------------------------------------------------------
out=$(tb_exec dpkg -P doorbell-agent 2>&1); rc=$?
check "dpkg -P: exit 0; config, data, slots and user gone" tb_sh 'test '"$rc"' = 0 && ! test -e /etc/doorbell-agent && ! test -e /var/lib/doorbell-agent &&
    ! test -e /opt/doorbell-agent && ! getent passwd doorbell && getent group gpio >/dev/null'

# --- 6. not over an install made by install.sh --------------------------------------------
tb_exec /ship/bundle-0.1.0/install.sh >/dev/null 2>&1
out=$(dpkg_i "$(pkg 0.1.0-1)"); rc=$?
if [[ $rc != 0 && "$out" == *"installed by install.sh"* ]] && tb_exec systemctl -q is-active doorbell-agent; then
    pass "dpkg -i over an install.sh install: refused by preinst, the agent keeps running"
else
    fail "dpkg -i over install.sh (exit $rc)" "$out"
fi
tb_teardown

# --- 7. the device packages -----------------------------------------------------------------
for t in aarch64-unknown-linux-gnu:arm64:AArch64 armv7-unknown-linux-gnueabihf:armhf:ARM; do
    IFS=: read -r triple arch machine <<<"$t"
    if [[ ! -f "$REPO/target/device/$triple/doorbell-agent" ]]; then
        echo "SKIP: $arch package (no target/device/$triple build)"
        continue
    fi
    d=$("$REPO/scripts/build-deb.sh" --target "$triple" --key "$W/release.key" --out "$W/debs" | awk '{print $1}')
    x=$(mktemp -d); dpkg-deb -x "$d" "$x"
    if [[ "$(dpkg-deb -f "$d" Architecture)" == "$arch" ]] &&
        readelf -h "$x/usr/lib/doorbell-agent/doorbell-agent" | grep -q "Machine:.*$machine" &&
        readelf -h "$x/usr/sbin/doorbell-slotctl" | grep -q "Machine:.*$machine"; then
        pass "$arch package: Architecture $arch, $machine binaries ($(stat -c %s "$d") bytes)"
        FIGURES+=("$(basename "$d"): $(stat -c %s "$d") bytes")
    else
        fail "$arch package" "$(dpkg-deb -I "$d")"
    fi
    rm -rf "$x"
done
summary "the .deb"
