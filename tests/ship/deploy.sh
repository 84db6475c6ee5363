#!/usr/bin/env bash
# Scenario: scripts/deploy.sh from this machine to devices over real ssh. Each device is a
# bare testbed container running Debian's sshd (openssh-server); this machine's ssh client
# reaches it through `ProxyCommand nsenter -n socat` (the containers have a private network),
# with a key made for the run. A third host has no sshd listening: unreachable.
# Host-driven; run by scripts/test-ship.sh (WORK: bin-VERSION dirs, release.key/.pub).
#
#   bash tests/ship/deploy.sh WORK

# shellcheck disable=SC2016  # single-quoted scripts run in the container, on purpose
set -uo pipefail
W=$(readlink -f "${1:?usage: deploy.sh WORK}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$REPO/scripts/testbed.sh"
# shellcheck source=tests/ship/common.sh
source "$REPO/tests/ship/common.sh"
tb_require_root || exit 125
export TB_EXEC_TIMEOUT=120
X86=x86_64-unknown-linux-gnu
T=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-deploy-test.XXXXXX")
DEVICES=(door-1 door-2)
holders=()
cleanup() {
    local d
    for d in "${DEVICES[@]}"; do touch "$T/$d.stop"; done
    for d in "${holders[@]}"; do wait "$d" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

echo "== deploy.sh over ssh to ${#DEVICES[@]} devices (+1 unreachable)"
ssh-keygen -q -t ed25519 -N '' -f "$T/id" || exit 125

# One container per device, each held by a background shell until $T/NAME.stop appears.
device_up() {
    local name="$1"
    (
        tb_boot --bare -- --bind-ro="$W:/ship" >"$T/$name.boot.log" 2>&1 || exit 125
        echo "$TB_PID" >"$T/$name.pid"
        tb_sh 'install -d -m 700 /root/.ssh && cat >/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys &&
               hostnamectl set-hostname '"$name"' 2>/dev/null; systemctl start ssh' <"$T/id.pub" >>"$T/$name.boot.log" 2>&1 || exit 125
        touch "$T/$name.ready"
        while [[ ! -e "$T/$name.stop" ]]; do sleep 0.2; done
        tb_teardown
    ) &
    holders+=($!)
}
for d in "${DEVICES[@]}"; do device_up "$d"; done
for d in "${DEVICES[@]}"; do
    for ((i = 0; i < 300; i++)); do [[ -e "$T/$d.ready" ]] && break; sleep 0.2; done
    [[ -e "$T/$d.ready" ]] || { cat "$T/$d.boot.log"; fail "device $d up with sshd"; exit 1; }
done
# Commands in a device (for the checks): dev NAME CMD...
dev() { local TB_PID; TB_PID=$(cat "$T/$1.pid"); tb_exec "${@:2}"; }
dev_sh() { dev "$1" /bin/bash -c "$2"; }
dev_healthy() { [[ "$(dev "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:8080/health)" == 200 ]]; }
dev_slot() { local s; s=$(dev "$1" doorbell-slotctl status 2>/dev/null); echo "${s%%$'\n'*}"; }

{
    for d in "${DEVICES[@]}"; do
        printf 'Host %s\n  User root\n  ProxyCommand nsenter -t %s -n socat STDIO TCP:127.0.0.1:22\n' "$d" "$(cat "$T/$d.pid")"
    done
    # Its sshd is not running: the connection is refused.
    printf 'Host door-3\n  User root\n  ProxyCommand nsenter -t %s -n socat STDIO TCP:127.0.0.1:2222\n' "$(cat "$T/door-1.pid")"
    printf 'Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile %s\n  LogLevel ERROR\n' \
        "$T/id" "$T/known_hosts"
} >"$T/ssh_config"
# (Its logs, kept when a device failed, stay in the test's temp dir.)
deploy() { "$REPO/scripts/deploy.sh" --ssh-config "$T/ssh_config" --key "$W/release.key" --log-dir "$(mktemp -d "$T/log.XXXXXX")" "$@" 2>&1; }
row() { grep "^$1 " <<<"$2"; }

# A fleet's site config: no GPIO in a container, a short soak.
printf '[gpio]\nbackend = "simulated"\n\n[update]\nsoak = "4s"\n' >"$T/site.toml"

# --- 1. fresh installs, two devices in parallel, one unreachable -------------------------------
t0=$(tb_now_ms)
out=$(deploy --bin-dir "$X86=$W/bin-0.1.0" --version 0.1.0 --config "$T/site.toml" door-1 door-2 door-3); rc=$?
ms=$(( $(tb_now_ms) - t0 ))
echo "$out" | sed -n '/^HOST/,$p'
if [[ $rc == 1 ]] && row door-1 "$out" | grep -q "installed: active, 0.1.0 committed in slot a" &&
    row door-2 "$out" | grep -q "installed: active, 0.1.0 committed in slot a" && row door-3 "$out" | grep -q "unreachable"; then
    pass "fresh deploy: door-1, door-2 installed (active, 0.1.0 in slot a), door-3 unreachable, exit 1 ($ms ms)"
    FIGURES+=("deploy.sh fresh install of 2 devices in parallel (bundle, ssh, install.sh) + 1 unreachable: $ms ms")
else
    fail "fresh deploy (exit $rc)" "$out"
fi
for d in "${DEVICES[@]}"; do
    check "$d: healthy; the site config with the update key" eventually 20 dev_sh "$d" 'curl -sf -o /dev/null --max-time 1 http://127.0.0.1:8080/health &&
        grep -q "^backend = \"simulated\"" /etc/doorbell-agent/config.toml && grep -q "^public_key = \"'"$(cat "$W/release.pub")"'\"" /etc/doorbell-agent/config.toml'
done

# --- 2. upgrade both through the A/B path: only the artifact travels ---------------------------
t0=$(tb_now_ms)
out=$(deploy --bin-dir "$X86=$W/bin-0.2.0" --version 0.2.0 door-1 door-2); rc=$?
ms=$(( $(tb_now_ms) - t0 ))
echo "$out" | sed -n '/^HOST/,$p'
if [[ $rc == 0 ]] && row door-1 "$out" | grep -q "0.2.0 (b, active).*updated: successful: 0.2.0 (from 0.1.0), slot b" &&
    row door-2 "$out" | grep -q "0.2.0 (b, active).*updated: successful: 0.2.0 (from 0.1.0), slot b"; then
    pass "upgrade deploy: both devices 0.1.0 -> 0.2.0 through the A/B path, exit 0 ($ms ms, 4 s soak)"
    FIGURES+=("deploy.sh A/B upgrade of 2 devices in parallel (artifact over ssh, trial, 4 s soak, commit): $ms ms")
else
    fail "upgrade deploy (exit $rc)" "$out"
fi
check "door-1, door-2 healthy on 0.2.0 in slot b" test "$(dev_slot door-1) $(dev_slot door-2)" = "0.2.0 committed in slot b 0.2.0 committed in slot b"
out=$(deploy --bin-dir "$X86=$W/bin-0.2.0" --version 0.2.0 door-1 door-2); rc=$?
if [[ $rc == 0 && $(grep -c "up to date" <<<"$out") == 2 ]]; then pass "deploy again: both up to date, exit 0"; else fail "deploy again (exit $rc)" "$out"; fi

# --- 3. a bad deploy rolls back by itself -------------------------------------------------------
# A build that cannot start (exits 1 at once): an ELF for the device's CPU, signed, installable.
mkdir -p "$T/bin-bad"
cp /bin/false "$T/bin-bad/doorbell-agent"
cp "$W/bin-0.1.0/doorbell-slotctl" "$T/bin-bad/"
t0=$(tb_now_ms)
out=$(deploy --bin-dir "$X86=$T/bin-bad" --version 0.3.0 door-1); rc=$?
ms=$(( $(tb_now_ms) - t0 ))
echo "$out" | sed -n '/^HOST/,$p'
if [[ $rc == 1 ]] && row door-1 "$out" | grep -q "0.2.0 (b, active).*rolled_back: 0.3.0 (from 0.2.0), slot b: failed on all 3 starts"; then
    pass "bad deploy: 0.3.0 rolled back to 0.2.0 by the device itself, reported, exit 1 ($ms ms)"
    FIGURES+=("deploy.sh of a build that cannot start: deploy -> rolled back and reported: $ms ms")
else
    fail "bad deploy (exit $rc)" "$out"
fi
check "door-1 healthy on 0.2.0 after the rollback" dev_healthy door-1
check "door-2 untouched" test "$(dev_slot door-2)" = "0.2.0 committed in slot b"

# --- 4. what travels --------------------------------------------------------------------------
"$REPO/scripts/make-bundle.sh" --target "$X86" --bin-dir "$W/bin-0.2.0" --key "$W/release.key" --version 0.2.0 --out "$T/b" >/dev/null
FIGURES+=("bytes over ssh per device: fresh install $(tar -C "$T/b" -cz . | wc -c) (bundle, tar.gz), upgrade $(stat -c %s "$T/b/doorbell-agent.dbu") (artifact)")

summary "deploy.sh"
