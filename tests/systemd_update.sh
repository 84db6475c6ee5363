#!/usr/bin/env bash
# Scenario: A/B self-update of doorbell-agent under a real systemd 252 (systemd-nspawn).
#
#   bash tests/systemd_update.sh BIN_DIR ARTIFACT_DIR      (as root; tests/systemd_update.rs
#                                                           builds both and runs this)
#
# BIN_DIR: doorbell-agent (0.1.0, built with --features fault-injection) and doorbell-slotctl.
# ARTIFACT_DIR: signed artifacts (good, faulty, bad), public_key, bad.cases.
#
# Drives the real units (ExecStartPre=+slotctl pre-start, ExecStopPost=+slotctl post-stop,
# Restart=, RestartForceExitStatus=75, TimeoutStartSec=, WatchdogSec=, StartLimitBurst=,
# OnFailure= rollback unit, commit path unit, trial deadline timer) with the real CLI. The
# slot layout, the slot state and the agent's data live on host directories bound into the
# container, so that a power cut (killing the container) and a reboot keep them.
# Prints PASS/FAIL lines and the measured figures; exits 1 if any check failed.

# shellcheck disable=SC2016  # single-quoted scripts run in the container, on purpose
set -uo pipefail
BIN=$(readlink -f "${1:?usage: systemd_update.sh BIN_DIR ARTIFACT_DIR}")
ART=$(readlink -f "${2:?usage: systemd_update.sh BIN_DIR ARTIFACT_DIR}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$REPO/scripts/testbed.sh"
tb_require_root || exit 125
export TB_EXEC_TIMEOUT=90

UNIT=doorbell-agent
PROBE=http://127.0.0.1:8080
CLI=/opt/doorbell-agent/current/doorbell-agent
PERSIST=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-update-persist.XXXXXX")
chmod 755 "$PERSIST"
mkdir -p "$PERSIST"/{opt,slotctl,agent,etc,results}
STATE="$PERSIST/slotctl/state.json"
HOST_PIDS=()   # host processes in the container's network namespace (broker, operator)
cleanup() { local p; for p in "${HOST_PIDS[@]}"; do kill "$p" 2>/dev/null; done; tb_teardown; rm -rf "$PERSIST"; }
trap cleanup EXIT

diag() {
    echo "--- slot state"; tb_exec doorbell-slotctl status 2>&1
    echo "--- unit"; tb_exec systemctl status "$UNIT" --no-pager --lines=0 2>&1 | head -n 12
    echo "--- journal"; tb_journal 2>&1 | grep -E 'doorbell|slotctl' | tail -n 25
}

# JSON from the host side: state file fields, probe answers.
st() {
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["state"]; x=eval(sys.argv[2]); print(x if isinstance(x, str) else json.dumps(x))' \
        "$STATE" "$1" 2>/dev/null
}
js() { python3 -c 'import json,sys; v=json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' "$1" 2>/dev/null; }
last_id() { st 's["outcomes"][-1]["id"] if s["outcomes"] else 0'; }
now_ms() { tb_now_ms; }

# Waits until the state has an outcome newer than $1; prints its kind (empty on timeout).
wait_outcome() {
    local after="$1" secs="$2" deadline kind
    deadline=$(( $(now_ms) + secs * 1000 ))
    while (( $(now_ms) < deadline )); do
        kind=$(st '[o["kind"] for o in s["outcomes"] if o["id"] > '"$after"'][-1]')
        [[ -n "$kind" ]] && { echo "$kind"; return 0; }
        sleep 0.2
    done
    return 1
}

# In the container: polls until /health is 200 and /status says slot $1; prints the
# container's wall clock (ms) at that moment.
wait_healthy_on() {
    tb_sh 'for i in $(seq 1 '"$(( ${2:-60} * 10 ))"'); do
        if [ "$(curl -s -o /dev/null -w "%{http_code}" --max-time 1 '"$PROBE"'/health)" = 200 ] &&
           curl -s --max-time 1 '"$PROBE"'/status | grep -q "\"slot\":\"'"$1"'\""; then date +%s%3N; exit 0; fi
        sleep 0.1; done; exit 1'
}

# The face models (scripts/fetch-models.sh) ride along in the /etc bind: a version is only
# healthy (and committed) with its pipeline worker up, which needs them.
models="${DOORBELL_MODELS:-/var/cache/doorbell-agent/models-v1}"
[[ -f "$models/.complete" ]] || {
    echo "FAIL: no face models in $models (scripts/fetch-models.sh fills it; scripts/test.sh runs it)"
    exit 1
}
# The test binaries are debug builds with the face pipeline (~45 MiB), above the 32 MiB
# default of update.max_size_mib that suits release builds; the second argument replaces it.
# With FLEET_LINK=1, the agent joins the broker of section 4b as device door-ct.
write_config() {
    install -m 0644 "$models/face_detection_short_range.onnx" "$models/dlib_face_recognition_resnet_v1.onnx" "$PERSIST/etc/"
    local top="" link="" broker=""
    if [[ "${FLEET_LINK:-0}" == 1 ]]; then
        top='device_id = "door-ct"'
        link=$'[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nreconnect_min = "100ms"\nreconnect_max = "1s"'
        broker='broker_timeout = "5s"'
    fi
    cat >"$PERSIST/etc/config.toml" <<EOF
$top
data_dir = "/var/lib/doorbell-agent"
[gpio]
backend = "simulated"
[probe]
listen = "127.0.0.1:8080"
[faces]
detector_model = "/etc/doorbell-agent/face_detection_short_range.onnx"
embedder_model = "/etc/doorbell-agent/dlib_face_recognition_resnet_v1.onnx"
[update]
public_key = "$(cat "$ART/public_key")"
tries = 3
soak = "6s"
deadline = "${1:-25s}"
${2:-max_size_mib = 128}
$broker
$link
EOF
    chmod 644 "$PERSIST/etc/config.toml"
}

# Shorter timeouts than on a Pi (30 s each), so that the hang cases stay quick. RestartSec
# stays the production 2 s: the figures below are the ones a device would show.
dropins() {
    tb_sh '
        mkdir -p /etc/systemd/system/doorbell-agent.service.d /etc/systemd/system/doorbell-agent-rollback.service.d
        printf "[Service]\nTimeoutStartSec=5s\nWatchdogSec=3s\n" >/etc/systemd/system/doorbell-agent.service.d/50-test.conf
        printf "[Service]\nExecStart=\nExecStart=-/usr/local/sbin/doorbell-slotctl rollback --on-failure --retry-after 2\n" \
            >/etc/systemd/system/doorbell-agent-rollback.service.d/50-test.conf
        systemctl daemon-reload'
}

boot() {
    tb_boot --units "$REPO/systemd" --bin "$BIN" --etc "$PERSIST/etc" --results "$PERSIST/results" -- \
        --bind="$PERSIST/opt:/opt/doorbell-agent" --bind="$PERSIST/slotctl:/var/lib/doorbell-slotctl" \
        --bind="$PERSIST/agent:/var/lib/doorbell-agent" --bind-ro="$ART:/artifacts" || exit 125
    trap cleanup EXIT   # tb_boot installed its own
    tb_install_agent || { fail "install the agent in the container"; exit 1; }
    dropins
}

# Everything an update could have changed: state file, slot tree, links, staged files.
snapshot() {
    sha256sum "$STATE" | cut -d' ' -f1
    find "$PERSIST/opt" -printf '%P %l %s %T@\n' | sort
    find "$PERSIST/agent/update" -mindepth 1 -printf '%P\n' 2>/dev/null | sort
}

apply() { tb_exec "$CLI" update apply "$@" 2>&1; }

# A trial that must fail: apply it, wait for the rollback, time trial start -> the previous
# version answering /health, check where everything ended.
fault_case() {
    local name="$1" file="$2" reason_re="$3" limit="$4" before committed out kind t_ok armed outcome
    # The cases run back to back; on a device, failed updates minutes apart never add up to
    # StartLimitBurst=8 within StartLimitIntervalSec=120.
    tb_exec systemctl reset-failed "$UNIT"
    before=$(last_id); committed=$(st 's["committed"]')
    out=$(apply --no-wait "/artifacts/$file")
    kind=$(wait_outcome "$before" $(( limit + 40 )))
    if [[ "$kind" != rolled_back ]]; then
        fail "$name: rolled back (got '${kind:-no outcome}')" "$out
$(diag)"; return
    fi
    t_ok=$(wait_healthy_on "$committed" 60)
    outcome=$(st '[o for o in s["outcomes"] if o["id"] > '"$before"'][-1]')
    armed=$(js 'v["ts_ms"] - v["trial_ms"]' <<<"$outcome")
    local reason; reason=$(js 'v["reason"]' <<<"$outcome")
    if [[ -n "$t_ok" && "$reason" =~ $reason_re ]]; then
        local ms=$(( t_ok - armed ))
        pass "$name: rolled back to slot $committed ($reason); previous version healthy $ms ms after the trial started"
        FIGURES+=("$name: trial start -> previous version answering /health: $ms ms (limit ${limit} s)")
        (( ms <= limit * 1000 )) || fail "$name: took $ms ms, limit $limit s"
    else
        fail "$name: previous slot $committed healthy, reason ~ /$reason_re/" "reason: $reason
$(diag)"
    fi
    [[ "$(readlink "$PERSIST/opt/current")" == "slots/$committed" ]] || fail "$name: current -> slots/$committed" "$(readlink "$PERSIST/opt/current")"
    tb_exec doorbell-slotctl verify >/dev/null 2>&1 || fail "$name: slotctl verify" "$(tb_exec doorbell-slotctl verify 2>&1)"
}

# Alerts and history as the running agent reports them.
has_alert() { tb_exec curl -s --max-time 3 "$PROBE/alerts?state=all&limit=1000" | grep -q "\"key\":\"$1\""; }
in_history() {
    local out; out=$(tb_exec "$CLI" update history --limit 200 2>&1)
    grep -qE "$1" <<<"$out" || { printf 'update history said:\n%s\n' "$(head -n 5 <<<"$out")" >&2; return 1; }
}

echo "== A/B self-update under a real systemd"
write_config
boot

# --- 1. units verify ---------------------------------------------------------------------------
out=$(tb_sh 'cd /usr/local/lib/systemd/system && for u in doorbell-agent.service doorbell-agent-rollback.service \
    doorbell-agent-commit.path doorbell-agent-commit.service doorbell-agent-trial.timer doorbell-agent-trial.service; do
    systemd-analyze verify "$u" 2>&1 || echo "verify $u failed"; done')
if [[ -z "$out" ]]; then pass "systemd-analyze verify: all six units, no warnings"; else fail "systemd-analyze verify" "$out"; fi

# --- 2. first start: slotctl bootstraps the state from slot a ------------------------------
tb_exec timeout 30 systemctl start "$UNIT"
check "first start: agent healthy on slot a" wait_healthy_on a 20
check "slot state bootstrapped: 0.1.0 committed in slot a" test "$(st 's["committed"] + " " + s["slots"]["a"]["version"]')" = "a 0.1.0"
status=$(tb_exec curl -s "$PROBE/status")
check "/status: slot a, update idle" test "$(js 'v["slot"] + " " + v["update"]["state"]' <<<"$status")" = "a idle"

# --- 3. happy path over http: 0.1.0 -> 0.2.0 -----------------------------------------------
tb_sh 'busybox httpd -p 127.0.0.1:8000 -h /artifacts'
before=$(last_id); t0=$(now_ms)
out=$(apply --no-wait http://127.0.0.1:8000/v0.2.0.dbu)
if grep -q "downloading" <<<"$out" && grep -q "staged 0.2.0" <<<"$out"; then pass "update apply URL: downloads with progress, verifies, stages"; else fail "update apply URL" "$out"; fi
line=""
for _ in $(seq 1 50); do
    line=$(tb_exec systemctl show "$UNIT" -p StatusText --value)
    [[ "$line" == *"trial 0.2.0 in slot b, 2 tries left"* ]] && break
    sleep 0.2
done
if [[ "$line" == *"trial 0.2.0 in slot b, 2 tries left"* ]]; then pass "STATUS= during the trial: $line"; else fail "STATUS= shows the trial" "$line"; fi
kind=$(wait_outcome "$before" 40)
t1=$(now_ms)
check "0.2.0 committed after its soak (outcome successful)" test "$kind" = successful
# 0.1.0 recorded its canary baseline before restarting; 0.2.0 compared itself with it.
reason=$(st '[o["reason"] for o in s["outcomes"] if o["id"] > '"$before"'][-1]')
if [[ -f "$PERSIST/agent/update/canary-baseline.json" && "$reason" == *"canary vs 0.1.0: "*"RSS "*"baseline"* ]]; then
    pass "canary: baseline recorded by 0.1.0, compared in the commit reason: $reason"
else
    fail "canary: baseline recorded, comparison in the successful outcome's reason" "reason: $reason"
fi
FIGURES+=("happy path 0.1.0 -> 0.2.0: apply -> committed: $(( t1 - t0 )) ms (6 s soak, 2 s RestartSec)")
check "agent healthy on slot b" wait_healthy_on b 20
check "current and committed -> slots/b" test "$(readlink "$PERSIST/opt/current") $(readlink "$PERSIST/opt/committed")" = "slots/b slots/b"
# The agent re-reads the slot state every second.
status_is() { test "$(js "$1" <<<"$(tb_exec curl -s "$PROBE/status")")" = "$2"; }
check "/status: slot b, update idle, committed 0.2.0" eventually 5 status_is 'v["slot"]+" "+v["update"]["state"]+" "+v["update"]["committed"]["version"]' "b idle 0.2.0"
sleep 1.5
check "history: successful 0.2.0" in_history 'successful +0\.2\.0 \(from 0\.1\.0\)'
check "alert update_successful raised" has_alert update_successful

# --- 4. and back: operator rollback to 0.1.0 ------------------------------------------------
before=$(last_id)
out=$(tb_exec "$CLI" update rollback 2>&1); rc=$?
if [[ $rc == 0 && "$out" == *manual_rollback* ]]; then pass "update rollback: $(tail -n1 <<<"$out")"; else fail "update rollback (exit $rc)" "$out"; fi
check "back on slot a (0.1.0), healthy" wait_healthy_on a 20
check "committed a" test "$(st 's["committed"]')" = a
check "the outcome names the CLI's request (a re-run of slotctl cannot apply it twice)" \
    test "$(st 's["outcomes"][-1]["rollback_request_id"][:6]')" = local-

# --- 4b. the same over MQTT, against a real broker ----------------------------------------
# The host's mosquitto and operator CLI run in the container's network namespace (it has
# only a loopback network), so the agent reaches the broker at 127.0.0.1:1883 and the
# operator's `fleet rollout --serve` is reachable from the agent.
in_netns() { nsenter -t "$TB_PID" -n -- "$@"; }
FLEET=(in_netns "$BIN/doorbell-fleet" --broker mqtt://127.0.0.1:1883)
printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$PERSIST/mosquitto.conf"
# (nsenter itself, not a function, in the background: $! is then the process to kill)
nsenter -t "$TB_PID" -n -- mosquitto -c "$PERSIST/mosquitto.conf" >"$PERSIST/results/mosquitto.log" 2>&1 &
HOST_PIDS+=($!)
FLEET_LINK=1 write_config
tb_exec systemctl reset-failed "$UNIT"
tb_exec timeout 30 systemctl restart "$UNIT"
wait_healthy_on a 20 >/dev/null
online() { "${FLEET[@]}" devices 2>/dev/null | grep -qE '^door-ct +yes +0\.1\.0 +a +running '; }
check "fleet devices: door-ct online with 0.1.0 in slot a" eventually 10 online
# (once the broker answers: `fleet watch` waits out outages, but needs the broker to start)
nsenter -t "$TB_PID" -n -- "$BIN/doorbell-fleet" --broker mqtt://127.0.0.1:1883 watch door-ct --json \
    >"$PERSIST/watch.jsonl" 2>"$PERSIST/results/watch.err" &
HOST_PIDS+=($!)
sleep 0.5

# Sections 3 and 4 raised these; an active alert is not raised twice, so clear them first.
for key in update_successful update_manual_rollback; do
    "${FLEET[@]}" send door-ct alert/clear --arg "alert=$key" --wait >/dev/null 2>&1
done
# A refused artifact: failed with its reason, nothing changed.
before_snap=$(snapshot)
out=$("${FLEET[@]}" send door-ct update --arg path=/artifacts/bad-signature.dbu --wait --timeout 30s 2>&1); rc=$?
if [[ $rc == 1 && "$out" == *"failed: refused (bad_signature)"* && "$before_snap" == "$(snapshot)" ]]; then
    pass "update over MQTT, bad signature: $(grep failed <<<"$out" | head -n1 | sed 's/  */ /g')"
else
    fail "update over MQTT, bad signature refused (exit $rc)" "$out"
fi

# 0.1.0 -> 0.2.0: accepted, download progress, restart into the trial, `successful` once committed.
tb_exec systemctl reset-failed "$UNIT"
t0=$(now_ms)
out=$("${FLEET[@]}" send door-ct update --arg url=http://127.0.0.1:8000/v0.2.0.dbu --wait --timeout 90s --json 2>&1); rc=$?
t1=$(now_ms)
statuses=$(python3 -c 'import json,sys; print(" ".join(dict.fromkeys(json.loads(l)["response"]["status"] for l in sys.stdin if l.startswith("{"))))' <<<"$out" 2>/dev/null)
progress=$(grep -c '"progress"' <<<"$out")
if [[ $rc == 0 && "$statuses" == "accepted executing successful" && "$progress" -ge 3 && "$out" == *'"version":"0.2.0"'* ]]; then
    pass "update over MQTT 0.1.0 -> 0.2.0: $statuses ($progress progress steps), successful after the restart"
    FIGURES+=("update over MQTT 0.1.0 -> 0.2.0: command sent -> successful: $(( t1 - t0 )) ms (6 s soak, 2 s RestartSec)")
else
    fail "update over MQTT: accepted, executing with progress, successful (exit $rc, statuses '$statuses', $progress progress)" "$out
$(diag)"
fi
check "over MQTT: agent healthy on slot b (0.2.0)" wait_healthy_on b 20

# ... and back with the rollback command, answered by 0.1.0 once it runs again.
tb_exec systemctl reset-failed "$UNIT"
out=$("${FLEET[@]}" send door-ct rollback --wait --timeout 60s 2>&1); rc=$?
if [[ $rc == 0 && "$out" == *successful*manual_rollback* && "$out" == *'"running":"0.1.0"'* ]]; then
    pass "rollback over MQTT: successful, reported by 0.1.0 on slot a"
else
    fail "rollback over MQTT (exit $rc)" "$out
$(diag)"
fi
check "over MQTT: back on slot a (0.1.0), healthy" wait_healthy_on a 20

# A rolled-back trial (a required check fails), through `fleet rollout --serve`: the old
# version, back, reports the command failed with the rollback reason; the rollout halts.
tb_exec systemctl reset-failed "$UNIT"
out=$("${FLEET[@]}" rollout "$ART/unhealthy-mqtt.dbu" --serve 127.0.0.1:8001 --devices door-ct --waves 100 --max-failures 0 --timeout 90s 2>&1); rc=$?
row=$(grep -E '^door-ct ' <<<"$out")
if [[ $rc == 1 && "$row" == *"0.1.0"*"0.5.7"*failed*"rolled_back: 0.5.7 (from 0.1.0): trial check failed"*"pipeline"* ]]; then
    pass "rollout over MQTT of a version failing its checks: failed with the reason, halted: $(sed 's/  */ /g' <<<"$row")"
else
    fail "rollout of a failing version: failed with the rollback reason, exit 1 (exit $rc)" "$out
$(diag)"
fi
check "after the failed trial: slot a healthy" wait_healthy_on a 20
# A version that cannot reach the broker (Fault::NoBroker: a closed port) gets no ConnAck
# within update.broker_timeout (5 s here) and is rolled back with the broker in the reason.
fault_case "no broker" no-broker.dbu 'fleet broker reachable: no ConnAck from the broker mqtt://127\.0\.0\.1:1883' 20
sleep 1.5
for key in update_refused update_successful update_manual_rollback update_rolled_back; do
    check "P/alerts carried $key" grep -q "\"key\":\"$key\"" "$PERSIST/watch.jsonl"
done
check "history: the refusal, with its command id" in_history 'refused .*bad_signature'
for p in "${HOST_PIDS[@]}"; do kill "$p" 2>/dev/null; done
HOST_PIDS=()
write_config
tb_exec systemctl restart "$UNIT"
wait_healthy_on a 20 >/dev/null

# --- 5. bad artifacts: refused with a reason, nothing changed -----------------------------
while read -r file code; do
    [[ -n "$file" ]] || continue
    before_snap=$(snapshot)
    out=$(apply "/artifacts/$file"); rc=$?
    after_snap=$(snapshot)
    if [[ $rc == 1 && "$out" == *"update refused ($code)"* && "$before_snap" == "$after_snap" ]]; then
        pass "$file refused: $(tail -n1 <<<"$out")"
    else
        fail "$file: want exit 1, refusal ($code), nothing changed (exit $rc)" "$out
$(diff <(echo "$before_snap") <(echo "$after_snap"))"
    fi
done <"$ART/bad.cases"
# ... and those that need a device condition:
write_config 25s 'max_size_mib = 4'
before_snap=$(snapshot); out=$(apply /artifacts/v0.6.0.dbu); rc=$?
if [[ $rc == 1 && "$out" == *"(too_large)"* && "$before_snap" == "$(snapshot)" ]]; then pass "over update.max_size_mib refused: $(tail -n1 <<<"$out")"; else fail "too large" "$out"; fi
sed -i '/^public_key/d' "$PERSIST/etc/config.toml"
before_snap=$(snapshot); out=$(apply /artifacts/v0.6.0.dbu); rc=$?
if [[ $rc == 1 && "$out" == *"(no_key)"* && "$before_snap" == "$(snapshot)" ]]; then pass "no update.public_key: refused: $(tail -n1 <<<"$out")"; else fail "no key" "$out"; fi
write_config
tb_sh 'mkdir -p /var/lib/doorbell-agent/update && mount -t tmpfs -o size=2m,mode=0750 tmpfs /var/lib/doorbell-agent/update &&
       chown doorbell:doorbell /var/lib/doorbell-agent/update'
before_snap=$(snapshot); out=$(apply /artifacts/v0.6.0.dbu); rc=$?
tb_exec umount /var/lib/doorbell-agent/update
if [[ $rc == 1 && "$out" == *"(no_space)"* && "$before_snap" == "$(snapshot)" ]]; then pass "not enough free space (checked before writing): $(tail -n1 <<<"$out")"; else fail "no space" "$out"; fi
check "agent still healthy on slot a after the refusals" wait_healthy_on a 5

# --- 6. faulty versions: every one ends on the previous slot, healthy, reported -----------
fault_case "crash at start (Restart=, tries counted down by pre-start)" crash.dbu 'failed on all 3 starts.*signal' 10
check "history: rolled_back 0.5.1" in_history 'rolled_back +0\.5\.1'
check "alert update_rolled_back raised" has_alert update_rolled_back
before_snap=$(snapshot); out=$(apply /artifacts/crash.dbu); rc=$?
if [[ $rc == 1 && "$out" == *"(known_bad)"* && "$before_snap" == "$(snapshot)" ]]; then pass "a version that failed here is refused: $(tail -n1 <<<"$out")"; else fail "known bad" "$out"; fi
fault_case "hang before READY (TimeoutStartSec=5s)" hang-before-ready.dbu 'start timeout' 15
fault_case "hang after READY (WatchdogSec=3s)" hang-after-ready.dbu 'watchdog' 15
fault_case "failing required check (pipeline self-test)" unhealthy.dbu 'required check failing: pipeline' 10
# 256 MiB more resident memory than the baseline 0.1.0 recorded before it restarted.
fault_case "canary: RSS regression (Fault::Bloat)" bloat.dbu 'canary: RSS [0-9.]+ MiB > 1\.50 × baseline' 15

# No commit before the deadline; meanwhile another update is refused.
tb_exec systemctl reset-failed "$UNIT"
before=$(last_id)
apply --no-wait /artifacts/no-commit.dbu >/dev/null
wait_healthy_on b 20 >/dev/null
before_snap=$(snapshot); out=$(apply /artifacts/v0.6.0.dbu); rc=$?
if [[ $rc == 1 && "$out" == *"(trial_running)"* && "$before_snap" == "$(snapshot)" ]]; then pass "update while a trial runs refused: $(tail -n1 <<<"$out")"; else fail "trial running" "$out"; fi
# Undo the wait_healthy_on's consumption of the outcome window: the case itself measures.
kind=$(wait_outcome "$before" 60)
check "no commit before the 25 s deadline: rolled back by the trial timer ($kind)" test "$kind" = rolled_back
if t_ok=$(wait_healthy_on a 20); then
    armed=$(st '[o["ts_ms"] - o["trial_ms"] for o in s["outcomes"] if o["id"] > '"$before"'][-1]')
    pass "deadline rollback: previous slot a healthy $(( t_ok - armed )) ms after the trial started"
    FIGURES+=("no commit before the deadline (25 s, timer every 5 s): trial start -> previous version answering /health: $(( t_ok - armed )) ms")
else
    fail "deadline rollback: previous slot a healthy" "$(diag)"
fi
check "deadline reason recorded" test -n "$(st '[o for o in s["outcomes"] if "deadline" in o["reason"]][-1]["id"]')"

# Start limit: with StartLimitBurst=2 the crash loop fails the unit before the tries run out,
# and OnFailure= (doorbell-agent-rollback.service) rolls back and starts the agent again.
tb_sh 'printf "[Unit]\nStartLimitBurst=2\n" >/etc/systemd/system/doorbell-agent.service.d/60-burst.conf; systemctl daemon-reload'
# (fault_case resets the start counter first: the exit-75 restart and the trial's first
# start are then 2 starts, the trial's retry is refused by the start limit.)
fault_case "crash loop hits StartLimitBurst -> OnFailure= rollback unit" crash-limit.dbu 'start limit' 15
tb_sh 'rm /etc/systemd/system/doorbell-agent.service.d/60-burst.conf; systemctl daemon-reload'

# --- 7. both slots bad: stay on the committed one, critical, no flip-flop -------------------
tb_exec systemctl reset-failed "$UNIT"
before=$(last_id)
printf 'this_key_is_unknown = 1\n' >>"$PERSIST/etc/config.toml"
tb_exec systemctl restart "$UNIT" >/dev/null 2>&1
kind=$(wait_outcome "$before" 30)
check "committed version failing right after a rollback: both_slots_bad recorded" test "$kind" = both_slots_bad
sleep 5   # two more OnFailure rounds (retry after 2 s)
check "no flip-flop: current stays on slots/a, one both_slots_bad outcome" \
    test "$(readlink "$PERSIST/opt/current") $(st 'len([o for o in s["outcomes"] if o["kind"] == "both_slots_bad"])')" = "slots/a 1"
write_config
check "fixed config: the OnFailure path starts the committed version again" wait_healthy_on a 30
sleep 1.5
check "critical alert update_both_slots_bad raised" has_alert update_both_slots_bad

# --- 8. slotctl never trusts the agent: a staged binary swapped after verification -------
tb_exec systemctl stop "$UNIT"
tb_exec systemctl reset-failed "$UNIT"
before=$(last_id)
out=$(apply --no-wait /artifacts/v0.6.0.dbu)
tb_sh 'cp /usr/local/bin/doorbell-slotctl /var/lib/doorbell-agent/update/staged/doorbell-agent'
tb_exec timeout 30 systemctl start "$UNIT"
kind=$(wait_outcome "$before" 10)
reason=$(st 's["outcomes"][-1]["reason"]')
if [[ "$kind" == refused && ( "$reason" == *"size mismatch"* || "$reason" == *"sha256 mismatch"* ) ]]; then pass "tampered staged binary refused by slotctl: $reason"; else fail "tampered staged binary" "$kind $reason"; fi
check "nothing installed: still slot a, healthy" wait_healthy_on a 20

# --- 9. crash points: kill after every durable step of an update and of a rollback --------
tb_exec systemctl stop "$UNIT" doorbell-agent-commit.path doorbell-agent-trial.timer
SLOTCTL="doorbell-slotctl --no-systemctl"
verify() { tb_exec doorbell-slotctl verify >/dev/null 2>&1; }
crash_bad=""
crash_total=0
# crash_phase NAME SETUP_FUNCTION STEP_CMD RECOVER_CMD (setup runs on the host)
crash_phase() {
    local name="$1" setup="$2" cmd="$3" recover="$4" n rc killed=0 out=""
    for n in $(seq 1 60); do
        "$setup"
        out=$(tb_sh "DOORBELL_CRASH_AFTER_STEP=$n $cmd" 2>&1); rc=$?
        [[ $rc == 137 ]] || break
        killed=$((killed + 1))
        verify || crash_bad+="$name: after step $n: $(tb_exec doorbell-slotctl verify 2>&1)"$'\n'
        tb_sh "$recover" >/dev/null 2>&1
        verify || crash_bad+="$name: recovery after step $n: $(tb_exec doorbell-slotctl verify 2>&1)"$'\n'
    done
    crash_total=$((crash_total + killed))
    if (( killed > 0 )) && [[ $rc == 0 ]]; then
        pass "crash points, $name: killed after each of its $killed durable steps; current always on a verified slot"
    else
        fail "crash points, $name: ran $killed kills, final exit $rc" "$out"
    fi
}
stage="$CLI update apply --force --no-wait /artifacts/v0.7.0.dbu"
# Back to "0.1.0 committed in slot a, no trial, nothing staged".
reset_a() {
    tb_sh 'rm -rf /var/lib/doorbell-agent/update/staged /var/lib/doorbell-agent/update/staging.tmp /var/lib/doorbell-agent/update/commit-request'
    [[ "$(st 's["trial"] is not None')" == true ]] && tb_exec $SLOTCTL rollback --reason reset >/dev/null 2>&1
    [[ "$(st 's["committed"]')" == a ]] || tb_exec $SLOTCTL rollback --reason reset >/dev/null 2>&1
}
staged_only() { reset_a; tb_sh "$stage" >/dev/null 2>&1; }
on_trial() { staged_only; tb_exec $SLOTCTL pre-start >/dev/null 2>&1; }
commit_requested() {
    on_trial
    tb_sh "printf '{\"trial_id\":$(st 's["trial"]["id"]'),\"version\":\"0.7.0\",\"soak_ms\":6000}' >/var/lib/doorbell-agent/update/commit-request"
}
crash_phase "staging (agent CLI)" reset_a "$stage" "$SLOTCTL pre-start"
crash_phase "install into the slot (slotctl pre-start)" staged_only "$SLOTCTL pre-start" "$SLOTCTL pre-start"
crash_phase "rollback (slotctl rollback)" on_trial "$SLOTCTL rollback --reason test" "$SLOTCTL pre-start; $SLOTCTL rollback --reason finish"
crash_phase "commit (slotctl pre-start honouring a commit request)" commit_requested "$SLOTCTL pre-start" "$SLOTCTL pre-start"
if [[ -z "$crash_bad" ]]; then pass "crash points: $crash_total kills, every one left current on a verified, non-pending slot"; else fail "crash points" "$crash_bad"; fi
reset_a
tb_exec systemctl start doorbell-agent-commit.path
tb_exec timeout 30 systemctl start "$UNIT"
check "after the crash points: agent healthy on slot a" wait_healthy_on a 20

# --- 10. repeated power loss during a trial -------------------------------------------------
write_config 120s
tb_exec systemctl reset-failed "$UNIT"
before=$(last_id)
apply --no-wait --force /artifacts/v0.6.0.dbu >/dev/null
cuts=0
for _ in 1 2 3; do
    # The trial version is up (soak 6 s, not committed yet): pull the plug.
    wait_healthy_on b 20 >/dev/null || break
    tb_kill 2>/dev/null; tb_teardown >/dev/null 2>&1; cuts=$((cuts + 1))
    boot
    tb_exec timeout 30 systemctl start "$UNIT" >/dev/null 2>&1
done
kind=$(wait_outcome "$before" 20)
check "$cuts power cuts during the trial: rolled back (tries used up across reboots)" test "$kind" = rolled_back
check "after the power cuts: previous slot a healthy" wait_healthy_on a 20
reason=$(st 's["outcomes"][-1]["reason"]')
check "power-cut rollback reason: $reason" grep -q "power loss" <<<"$reason"

# --- summary --------------------------------------------------------------------------------
tb_journal >"$PERSIST/results/journal.txt" 2>&1
echo "== figures"
printf '   %s\n' "${FIGURES[@]}"
echo "== $PASSED passed, $FAILED failed"
if ((FAILED)); then echo "RESULT: FAIL"; exit 1; fi
echo "RESULT: PASS"
