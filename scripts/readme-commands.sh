#!/usr/bin/env bash
# The README's two commands, as written, on a fresh clone (issue 17): a newcomer's first
# command once failed as written and nothing noticed.
#
# - Command 2 (the test suite) is what CI runs: checks that .ci/run calls exactly it.
# - Command 1 (the laptop run) runs verbatim in a fresh `git clone` of this checkout until the
#   agent is ready; then the follow-up commands the README names (press, status, /metrics),
#   each checked against the README's text; then SIGTERM and a clean stop.
#
# The clone builds into target/fresh-clone of this checkout, kept between runs so a second run
# is quick. Never into this checkout's own target/: cargo's fingerprints ignore where a
# package's sources are, so the clone's binary (built from HEAD) would later pass for this
# checkout's (with its uncommitted changes), and its build script's output, paths into the
# clone, would be reused after the clone is gone (CI's link failed on exactly that).
# Uses the probe port of examples/dev.toml (8080).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# The code blocks of the "## Two commands" section, comments and blank lines dropped.
mapfile -t commands < <(awk '
    /^## Two commands/ { in_section = 1; next }
    in_section && /^## / { exit }
    in_section && /^```/ { in_block = !in_block; next }
    in_section && in_block && !/^[[:space:]]*(#|$)/ { print }
' README.md)
[[ ${#commands[@]} == 2 ]] || fail "README.md, \"Two commands\": expected 2 commands, found ${#commands[@]}: ${commands[*]:-none}"
run_cmd="${commands[0]}"
test_cmd="${commands[1]}"
echo "README command 1: $run_cmd"
echo "README command 2: $test_cmd"

grep -qxF "exec $test_cmd" .ci/run || fail ".ci/run does not exec the README's command 2 ($test_cmd)"
echo "PASS: .ci/run runs README command 2"

# The follow-ups the README names after command 1, checked to be there verbatim.
press='cargo run -- -c examples/dev.toml press'
status='cargo run -- -c examples/dev.toml status'
metrics='curl localhost:8080/metrics'
for c in "$press" "$status" "$metrics"; do
    grep -qF "\`$c\`" README.md || fail "README.md no longer names \`$c\`; update this script with it"
done

work="$(mktemp -d)"
agent_pid=
cleanup() {
    if [[ -n "$agent_pid" ]]; then kill -TERM -- "-$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
export CARGO_TARGET_DIR="$repo/target/fresh-clone"

log="$work/agent.log"
setsid bash -c "$run_cmd" >"$log" 2>&1 &
agent_pid=$!
# The first build of a clean clone and the model conversion take minutes.
for _ in $(seq 1 1200); do
    grep -q ' ready in ' "$log" && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$log" >&2; fail "command 1 exited before the agent was ready"; }
    sleep 1
done
grep -q ' ready in ' "$log" || { tail -n 40 "$log" >&2; fail "command 1: no agent ready within 20 min"; }
echo "PASS: command 1: $(grep -o 'ready in [^ ]* [a-z]*' "$log" | head -n1)"

out=$(bash -c "$press" 2>&1) || fail "$press: $out"
grep -q 'pressed' <<<"$out" || fail "$press: $out"
for _ in $(seq 1 300); do grep -q '\] ring [0-9]* stored:' "$log" && break; sleep 0.1; done
ring=$(grep -o '\] ring [0-9]* stored:.*' "$log" | head -n1) || fail "$press: no ring stored within 30 s"
echo "PASS: $press: ${ring#] }"
out=$(bash -c "$status" 2>"$work/status.err") || fail "$status: $out $(cat "$work/status.err")"
grep -q 'dev-laptop' <<<"$out" || fail "$status: $out"
echo "PASS: $status: $(head -n1 <<<"$out")"
out=$(bash -c "$metrics -s" 2>&1) || fail "$metrics: $out"
grep -q '^doorbell_rings_total' <<<"$out" || fail "$metrics: no doorbell_rings_total in $(head -c 300 <<<"$out")"
echo "PASS: $metrics: $(grep -c '^doorbell_' <<<"$out") doorbell_ series"

kill -TERM -- "-$agent_pid"
for _ in $(seq 1 100); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
agent_pid=
grep -q 'stopped cleanly' "$log" || { tail -n 20 "$log" >&2; fail "SIGTERM: no clean stop"; }
echo "PASS: SIGTERM: stopped cleanly"
