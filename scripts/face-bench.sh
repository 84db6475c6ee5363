#!/usr/bin/env bash
# face-bench.sh — the face pipeline's numbers (issue 5), measured on this machine with a
# release build, one inference thread:
#   1. criterion: decode, detect+align+embed+match per frame, matching (benches/pipeline.rs)
#   2. the real agent + worker: ring → decided for a 3-frame burst from files (p50/p99 over
#      N warm rings), the worker's cold start, RSS of the agent and of the worker
#   3. stripped binary sizes with and without the `faces` feature
#   4. the peer (Python face_recognition: dlib HOG + original dlib ResNet) on the same
#      labelled photos: time per image, true/false accepts  (skip with PEER=0)
# Not part of scripts/test.sh (takes minutes); run it by hand and keep its output.
set -euo pipefail
cd "$(dirname "$0")/.."
RINGS="${RINGS:-100}"
models="$(scripts/fetch-models.sh)"
export DOORBELL_MODELS="$models"

echo "== 1. criterion (cargo bench --bench pipeline)"
cargo bench --locked --bench pipeline 2>&1 | grep -E "^(frame|decode|match|[a-z].*time:)|time:" || true

echo "== 2. end to end (release agent, files capture, 3-frame burst, $RINGS warm rings)"
cargo build --locked --release -q
work="$(mktemp -d)"
trap 'kill "$agent_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/frames"
cp "$models/testset/stranger/sample3-2.jpg" "$work/frames/a.jpg"
cp "$models/testset/person/obama/2.jpg" "$work/frames/b.jpg"
cp "$models/testset/person/biden/1.jpg" "$work/frames/c.jpg"
cat >"$work/config.toml" <<TOML
data_dir = "$work/data"
[gpio]
backend = "simulated"
debounce = "0s"
burst = 10000
rings_per_minute = 600000
[probe]
listen = "127.0.0.1:0"
[capture]
source = "files"
path = "$work/frames"
frames = 3
[faces]
detector_model = "$models/face_detection_short_range.onnx"
embedder_model = "$models/dlib_face_recognition_resnet_v1.onnx"
TOML
RUST_LOG=info target/release/doorbell-agent -c "$work/config.toml" run 2>"$work/log" &
agent_pid=$!
for _ in $(seq 100); do grep -q " ready in " "$work/log" && break; sleep 0.1; done
addr="$(sed -n 's/.*probe http:\/\///p' "$work/log" | head -n1)"
for _ in $(seq 100); do grep -q "pipeline worker started" "$work/log" && break; sleep 0.1; done
grep -o "pipeline worker started in [0-9]* ms (models loaded in [0-9]* ms)" "$work/log" | sed 's/^/cold start: /'
for i in $(seq "$RINGS"); do
    curl -s -X POST "http://$addr/simulate/press" >/dev/null
    for _ in $(seq 500); do grep -q "ring $i stored" "$work/log" && break; sleep 0.01; done
done
grep -o "ring [0-9]* stored: .* in [0-9.]* ms" "$work/log" | sed 's/.* in \([0-9.]*\) ms/\1/' | sort -n | awk '
    {v[NR]=$1} END {printf "ring → stored (press to flushed decision, 3 frames): n=%d p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", NR, v[int(NR*0.5+0.5)], v[int(NR*0.99+0.5)], v[NR]}'
worker_pid="$(cat /proc/"$agent_pid"/task/*/children | tr ' ' '\n' | grep -m1 .)"
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
echo "RSS: agent $(rss "$agent_pid"), worker with models $(rss "$worker_pid")"
grep -o 'result=[a-z_]*' "$work/log" | sort | uniq -c | sed 's/^/results: /'
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true

echo "== 3. stripped binary size"
cargo build --locked --release -q --no-default-features --target-dir target/no-faces
stat -c '%s %n' target/release/doorbell-agent target/no-faces/release/doorbell-agent | awk '{printf "%s: %.2f MiB\n", $2, $1/1048576}'

if [[ "${PEER:-1}" == 1 ]]; then
    echo "== 4. peer: Python face_recognition on the same labelled photos"
    venv="${DOORBELL_CACHE:-/var/cache/doorbell-agent}/venv-peer"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 \
            numpy==2.4.6 pillow==13.0.0 click
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps face_recognition==1.3.0
    fi
    "$venv/bin/python" scripts/models/peer.py "$models/testset"
    echo "ours on the same photos: cargo test --release --test vision -- --nocapture"
    cargo test --locked --release -q --test vision -- --nocapture 2>&1 | grep -E "true accepts|genuine"
fi
