# shellcheck shell=bash
# Shared by the shipping scenarios (tests/ship/*.sh, run by scripts/test-ship.sh): what they
# ask a device (a testbed container) about the agent (PASS/FAIL bookkeeping: scripts/testbed.sh).
# Sourced after scripts/testbed.sh.

# What the agent's device looks like, for a FAIL line.
diag() {
    echo "--- slot state"; tb_exec doorbell-slotctl status 2>&1 || tb_exec /usr/sbin/doorbell-slotctl status 2>&1
    echo "--- unit"; tb_exec systemctl status doorbell-agent --no-pager --lines=0 2>&1 | head -n 12
    echo "--- journal"; tb_journal 2>&1 | grep -E 'doorbell|slotctl' | tail -n 25
}

# The HTTP code of the agent's /health in the container (000: not answering).
health_code() { tb_exec curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:8080/health; }
healthy() { [[ "$(health_code)" == 200 ]]; }
# `systemctl show` property of the agent's unit.
unit_prop() { tb_exec systemctl show -p "$1" --value doorbell-agent.service; }
# The first line of the slot state ("0.2.0 committed in slot b", "trial ...").
# (Read whole: slotctl aborts when its reader closes the pipe early.)
slot_state() { local s; s=$(tb_exec doorbell-slotctl status 2>/dev/null); echo "${s%%$'\n'*}"; }
slot_is() { [[ "$(slot_state)" == "$1" ]]; }
# The agent's update history (its store, through the probe) lists OUTCOME VERSION. The agent
# imports slotctl's outcomes about once a second.
history_has() { local h; h=$(tb_exec doorbell-agent update history 2>/dev/null) && grep -qE "^[^ ]+ +$1 +$2 " <<<"$h"; }
on_trial_healthy() { [[ "$(slot_state)" == "trial $1 "* ]] && healthy; }

# Everything an install could touch: path, type, mode, owner, size, mtime, link target, hash.
install_snapshot() {
    tb_sh 'find /opt/doorbell-agent /usr/local/sbin /usr/local/bin /usr/local/lib/systemd /usr/local/lib/sysusers.d \
               /etc/doorbell-agent /usr/sbin/doorbell-slotctl /usr/bin/doorbell-agent /lib/systemd/system/doorbell-agent* \
               -printf "%p %y %m %u:%g %s %T@ %l\n" 2>/dev/null | sort
           getent passwd doorbell; getent group gpio video doorbell
           find /opt/doorbell-agent /etc/doorbell-agent -type f -exec sha256sum {} + 2>/dev/null | sort'
}

summary() {
    local f
    echo
    for f in "${FIGURES[@]}"; do echo "FIGURE: $f"; done
    echo "== $1: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}
