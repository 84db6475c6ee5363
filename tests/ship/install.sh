#!/usr/bin/env bash
# Scenario: scripts/install.sh on a device: a bare testbed container (Debian bookworm, systemd
# 252, no agent, no `gpio` group). Host-driven; run by scripts/test-ship.sh, which makes the
# bundles in WORK (bundle-0.1.0, -0.2.0, -0.3.0: x86_64, signed with WORK/release.key).
#
#   bash tests/ship/install.sh WORK
#
# Prints PASS/FAIL lines and figures; exits 1 if any check failed.

# shellcheck disable=SC2016  # single-quoted scripts run in the container, on purpose
set -uo pipefail
W=$(readlink -f "${1:?usage: install.sh WORK}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$REPO/scripts/testbed.sh"
# shellcheck source=tests/ship/common.sh
source "$REPO/tests/ship/common.sh"
tb_require_root || exit 125
export TB_EXEC_TIMEOUT=150
KEY=$(cat "$W/release.pub")

echo "== install.sh on a bare device"
tb_boot --bare -- --bind-ro="$W:/ship" || exit 125
run_install() { tb_exec "$@" 2>&1; }

# --- 1. fresh install, with the commented default config -----------------------------------
had_gpio=$(tb_exec getent group gpio)
t0=$(tb_now_ms)
out=$(run_install /ship/bundle-0.1.0/install.sh); rc=$?
FIGURES+=("fresh install (install.sh, agent started): $(( $(tb_now_ms) - t0 )) ms")
if [[ $rc == 0 && "$out" == *"doorbell-agent: active"* ]]; then pass "fresh install: exit 0, agent active"; else fail "fresh install (exit $rc)" "$out
$(diag)"; fi
[[ -z "$had_gpio" ]] && check "the gpio group was absent and is created" tb_exec getent group gpio
groups=$(tb_exec id -nG doorbell)
check "user doorbell in its group and in gpio, video ($groups)" test "$(tr ' ' '\n' <<<"$groups" | sort | tr '\n' ' ')" = "doorbell gpio video "
check "user doorbell: system user, no login" test "$(tb_exec getent passwd doorbell | cut -d: -f6,7)" = "/nonexistent:/usr/sbin/nologin"
check "slot a holds the bundle's agent" tb_exec cmp /ship/bundle-0.1.0/doorbell-agent /opt/doorbell-agent/slots/a/doorbell-agent
check "current and committed -> slots/a" test "$(tb_sh 'readlink /opt/doorbell-agent/current; readlink /opt/doorbell-agent/committed' | tr '\n' ' ')" = "slots/a slots/a "
check "doorbell-slotctl in /usr/local/sbin (0755)" test "$(tb_exec stat -c %a /usr/local/sbin/doorbell-slotctl)" = 755
check "six units in /usr/local/lib/systemd/system" test "$(tb_sh 'ls /usr/local/lib/systemd/system/doorbell-agent* | wc -l')" = 6
check "/usr/local/bin/doorbell-agent -> current" test "$(tb_exec readlink /usr/local/bin/doorbell-agent)" = /opt/doorbell-agent/current/doorbell-agent
check "config = the commented default, root:doorbell 0640" test "$(tb_sh 'cmp -s /ship/bundle-0.1.0/config.toml /etc/doorbell-agent/config.toml && stat -c "%U:%G %a" /etc/doorbell-agent/config.toml')" = "root:doorbell 640"
check "unit enabled" test "$(tb_exec systemctl is-enabled doorbell-agent)" = enabled
check "face models in /usr/local/share/doorbell-agent/models (0644), where the agent looks" tb_sh '
    for m in face_detection_short_range.onnx dlib_face_recognition_resnet_v1.onnx; do
        cmp -s /ship/bundle-0.1.0/models/$m /usr/local/share/doorbell-agent/models/$m &&
        test "$(stat -c %a /usr/local/share/doorbell-agent/models/$m)" = 644 || exit 1; done'
check "slot state: 0.1.0 committed in slot a" test "$(slot_state)" = "0.1.0 committed in slot a"
# The default config drives a real GPIO pin, which a container has not: everything else is up
# (the `alerts` check is degraded by the gpio_unavailable alert that says so).
body=$(tb_exec curl -s --max-time 3 http://127.0.0.1:8080/health)
failing=$(python3 -c 'import json,sys; c=json.loads(sys.argv[1])["checks"]; print(" ".join(sorted(k for k,v in c.items() if not v["ok"])))' "$body" 2>/dev/null)
check "default config: agent answers /health; failing: gpio (no GPIO in a container) and the alert about it" test "$failing" = "alerts gpio"

# --- 2. the installer edits the config: simulated button (no GPIO here), short soak --------
tb_sh 'sed -i "s/^# backend = \"rppal\".*/backend = \"simulated\"/; s/^# soak = \"60s\".*/soak = \"4s\"/" /etc/doorbell-agent/config.toml &&
       doorbell-agent check-config >/dev/null && systemctl restart doorbell-agent'
check "edited config: agent healthy" eventually 20 healthy

# --- 3. re-run with the update key: only the key is added, the edits stay ------------------
out=$(run_install /ship/bundle-0.1.0/install.sh --public-key "$KEY"); rc=$?
if [[ $rc == 0 && "$out" == *"set [update] public_key"* && "$out" == *"restarted doorbell-agent.service"* ]]; then
    pass "re-run with --public-key: key added, agent restarted for it"
else
    fail "re-run with --public-key (exit $rc)" "$out"
fi
check "the edits are kept and the key is in [update]" test "$(tb_sh 'grep -c -e "^backend = \"simulated\"" -e "^soak = \"4s\"" -e "^public_key = \"'"$KEY"'\"" /etc/doorbell-agent/config.toml')" = 3
check "agent healthy" eventually 20 healthy

# --- 4. re-run: nothing changes ----------------------------------------------------------
snap=$(install_snapshot); pid=$(unit_prop MainPID); restarts=$(unit_prop NRestarts)
out=$(run_install /ship/bundle-0.1.0/install.sh --public-key "$KEY"); rc=$?
if [[ $rc == 0 && "$out" == *"nothing to do"* ]]; then pass "re-run: exit 0, nothing to do"; else fail "re-run (exit $rc)" "$out"; fi
after=$(install_snapshot)
if [[ "$snap" == "$after" ]]; then pass "re-run: no file, link, mode, owner, user or group changed"; else fail "re-run changed something" "$(diff <(echo "$snap") <(echo "$after"))"; fi
check "re-run: the agent was not restarted (same MainPID $pid)" test "$(unit_prop MainPID) $(unit_prop NRestarts)" = "$pid $restarts"
out=$(run_install /ship/bundle-0.1.0/install.sh --public-key "AAAA$KEY"); rc=$?
if [[ $rc == 1 && "$out" == *"has another [update] public_key"* ]]; then pass "another key than the configured one: refused, exit 1"; else fail "another key (exit $rc)" "$out"; fi

# --- 5. upgrade: a newer bundle goes through the A/B path --------------------------------
t0=$(tb_now_ms)
out=$(run_install /ship/bundle-0.2.0/install.sh); rc=$?
ms=$(( $(tb_now_ms) - t0 ))
if [[ $rc == 0 && "$out" == *"0.1.0 -> 0.2.0 through the A/B path"* && "$out" == *"successful: 0.2.0"* ]]; then
    pass "upgrade 0.1.0 -> 0.2.0: update apply of the signed artifact, trial, commit ($ms ms, 4 s soak)"
    FIGURES+=("upgrade through install.sh (apply, restart, 4 s soak, commit): $ms ms")
else
    fail "upgrade to 0.2.0 (exit $rc)" "$out
$(diag)"
fi
check "0.2.0 committed in slot b; slot a keeps 0.1.0" test "$(slot_state)" = "0.2.0 committed in slot b"
check "slot b holds the 0.2.0 binary, slot a is untouched" tb_sh 'cmp /ship/bundle-0.2.0/doorbell-agent /opt/doorbell-agent/slots/b/doorbell-agent &&
    cmp /ship/bundle-0.1.0/doorbell-agent /opt/doorbell-agent/slots/a/doorbell-agent'
check "agent healthy on 0.2.0" eventually 20 healthy
out=$(run_install /ship/bundle-0.2.0/install.sh); rc=$?
if [[ $rc == 0 && "$out" == *"nothing to do"* ]]; then pass "re-run of the 0.2.0 bundle: nothing to do"; else fail "re-run 0.2.0 (exit $rc)" "$out"; fi
out=$(run_install /ship/bundle-0.1.0/install.sh); rc=$?
if [[ $rc == 0 && "$out" == *"newer than this bundle's 0.1.0: slots left alone"* && "$(slot_state)" == "0.2.0 committed in slot b" ]]; then
    pass "an older bundle leaves the slots alone"
else
    fail "older bundle (exit $rc)" "$out"
fi

# --- 6. new units while an update is on trial: installed, the agent is not restarted -------
tb_sh 'rm -rf /tmp/b3 && cp -a /ship/bundle-0.3.0 /tmp/b3 && printf "\n# changed by the test\n" >>/tmp/b3/systemd/doorbell-agent.service'
tb_exec doorbell-agent update apply --no-wait /ship/bundle-0.3.0/doorbell-agent.dbu >/dev/null 2>&1
eventually 30 on_trial_healthy 0.3.0
trial_before=$(slot_state); pid=$(unit_prop MainPID)
out=$(run_install /tmp/b3/install.sh); rc=$?
if [[ $rc == 0 && "$out" == *"installed /usr/local/lib/systemd/system/doorbell-agent.service"* && "$out" == *"not restarting it now, an update is on trial"* ]]; then
    pass "during a trial ($trial_before): new unit installed, restart deferred"
else
    fail "install during a trial (exit $rc, state $trial_before)" "$out"
fi
check "the agent on trial kept running (MainPID $pid), no try used up" test "$(unit_prop MainPID) $(slot_state)" = "$pid $trial_before"
check "the trial still commits: 0.3.0 committed in slot a" eventually 30 slot_is "0.3.0 committed in slot a"

# --- 7. uninstall: data and config stay --------------------------------------------------
check "the agent's history has the update (imported from slotctl's outcome)" eventually 10 history_has successful '0\.3\.0'
out=$(run_install /ship/bundle-0.1.0/install.sh --uninstall); rc=$?
if [[ $rc == 0 ]]; then pass "uninstall: exit 0"; else fail "uninstall (exit $rc)" "$out"; fi
check "uninstall: unit gone, no agent process" test "$(unit_prop LoadState) $(tb_sh 'pgrep -x doorbell-agent || true')" = "not-found "
check "uninstall: slots, slot state, slotctl, CLI link, units, models gone" tb_sh '! ls -d /opt/doorbell-agent /var/lib/doorbell-slotctl /usr/local/sbin/doorbell-slotctl \
    /usr/local/bin/doorbell-agent /usr/local/lib/systemd/system/doorbell-agent* /usr/local/share/doorbell-agent 2>/dev/null | grep -q .'
check "uninstall: config (with its edits), data and user kept" tb_sh 'grep -q "^backend = \"simulated\"" /etc/doorbell-agent/config.toml &&
    test -d /var/lib/doorbell-agent/db && id doorbell >/dev/null'
out=$(run_install /ship/bundle-0.1.0/install.sh --uninstall); rc=$?
if [[ $rc == 0 && "$out" == *"nothing to do"* ]]; then pass "uninstall again: nothing to do"; else fail "uninstall again (exit $rc)" "$out"; fi

# --- 8. install again: the kept config and data are picked up ------------------------------
out=$(run_install /ship/bundle-0.1.0/install.sh --public-key "$KEY"); rc=$?
if [[ $rc == 0 && "$out" == *"doorbell-agent: active"* ]]; then pass "reinstall: exit 0, agent active"; else fail "reinstall (exit $rc)" "$out"; fi
check "reinstall: healthy with the kept config" eventually 20 healthy
check "reinstall: the kept store still has the update history" history_has successful '0\.3\.0'

# --- 9. purge ---------------------------------------------------------------------------
out=$(run_install /ship/bundle-0.1.0/install.sh --uninstall --purge); rc=$?
if [[ $rc == 0 ]]; then pass "purge: exit 0"; else fail "purge (exit $rc)" "$out"; fi
check "purge: config, data and user doorbell gone; gpio and video stay" tb_sh '! test -e /etc/doorbell-agent && ! test -e /var/lib/doorbell-agent &&
    ! getent passwd doorbell && ! getent group doorbell && getent group gpio >/dev/null && getent group video >/dev/null'

# --- 10. what install.sh refuses -----------------------------------------------------------
printf '[gpio]\npin = 99\n' >"$W/bad.toml"; chmod 644 "$W/bad.toml"
out=$(run_install /ship/bundle-0.1.0/install.sh --config /ship/bad.toml); rc=$?
if [[ $rc == 78 && "$out" == *"gpio.pin"* && "$(unit_prop ActiveState)" != active ]]; then
    pass "invalid config: exit 78 naming gpio.pin, agent not started"
else
    fail "invalid config (exit $rc)" "$out"
fi
run_install /ship/bundle-0.1.0/install.sh --uninstall --purge >/dev/null
tb_sh 'rm -rf /tmp/arm && cp -a /ship/bundle-0.1.0 /tmp/arm && echo aarch64-unknown-linux-gnu >/tmp/arm/TARGET'
if [[ -f "$REPO/target/device/aarch64-unknown-linux-gnu/doorbell-agent" ]]; then
    tb_sh 'cat >/tmp/arm/doorbell-agent' <"$REPO/target/device/aarch64-unknown-linux-gnu/doorbell-agent"
    out=$(run_install /tmp/arm/install.sh); rc=$?
    if [[ $rc == 3 && "$out" == *"this device needs x86_64-unknown-linux-gnu"* ]] && ! tb_exec test -e /opt/doorbell-agent; then
        pass "an aarch64 bundle on an amd64 device: exit 3, nothing installed"
    else
        fail "wrong-architecture bundle (exit $rc)" "$out"
    fi
else
    echo "SKIP: wrong-architecture bundle (no target/device/aarch64-unknown-linux-gnu build)"
fi

tb_teardown
summary "install.sh"
