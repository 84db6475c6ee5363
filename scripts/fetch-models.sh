#!/usr/bin/env bash
# fetch-models.sh — fetches the face models and the labelled test photos from the package
# registries (npm, PyPI) only, converts the models to ONNX, verifies each against the
# runtime it came from, and caches everything. Nothing is ever downloaded at run time.
#
#   scripts/fetch-models.sh                 build (or reuse) the cache, print its directory
#   scripts/fetch-models.sh --install DIR   also copy the two .onnx files into DIR
#                                           (on a device: /usr/local/share/doorbell-agent/models)
#
# Produces in $DOORBELL_CACHE/models-v$RECIPE (default /var/cache/doorbell-agent/...):
#   face_detection_short_range.onnx    BlazeFace short-range (Apache-2.0), from npm
#                                      @mediapipe/face_detection, converted with tflite2onnx,
#                                      checked against LiteRT (the TFLite runtime)
#   dlib_face_recognition_resnet_v1.onnx  dlib's face recognition ResNet (weights CC0), from
#                                      npm @vladmandic/face-api's port, rebuilt as ONNX by
#                                      scripts/models/build_embedder.py, checked against
#                                      face-api's own network on tfjs
#   testset/                           labelled photos (scripts/models/prepare_testset.py)
# Every input file is pinned by sha256 below, every tool by version; the outputs must hash
# to what src/config.rs expects (DETECTOR_SHA256, EMBEDDER_SHA256).
# Needs: python3 (venv), node + npm. Takes ~2 min the first time, ~0 s when cached.
set -euo pipefail
cd "$(dirname "$0")/.."

RECIPE=1
CACHE="${DOORBELL_CACHE:-/var/cache/doorbell-agent}"
OUT="$CACHE/models-v$RECIPE"

PY_PINS=(numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 protobuf==7.36.2 tflite2onnx==0.4.1 tflite==2.18.0
    flatbuffers==25.12.19 ai-edge-litert==2.3.0 pillow==13.0.0)
NPM_PINS=(@mediapipe/face_detection@0.4.1657300184 @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0
    @tensorflow/tfjs-backend-wasm@4.22.0)
SDIST="face_recognition==1.3.0"

# Inputs: path (inside the npm tree or the sdist) and sha256.
declare -A PINNED=(
    [node_modules/@mediapipe/face_detection/face_detection_short_range.tflite]=3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633
    [node_modules/@vladmandic/face-api/model/face_recognition_model.bin]=b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589
    [node_modules/@vladmandic/face-api/model/face_recognition_model-weights_manifest.json]=cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b
    [node_modules/@vladmandic/face-api/demo/sample1.jpg]=8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51
    [node_modules/@vladmandic/face-api/demo/sample2.jpg]=7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691
    [node_modules/@vladmandic/face-api/demo/sample3.jpg]=8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936
    [node_modules/@vladmandic/face-api/demo/sample4.jpg]=729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc
    [node_modules/@vladmandic/face-api/demo/sample5.jpg]=6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938
    [node_modules/@vladmandic/face-api/demo/sample6.jpg]=9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87
    [sdist/face_recognition-1.3.0/tests/test_images/obama.jpg]=0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6
    [sdist/face_recognition-1.3.0/tests/test_images/obama2.jpg]=a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6
    [sdist/face_recognition-1.3.0/tests/test_images/obama3.jpg]=76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3
    [sdist/face_recognition-1.3.0/tests/test_images/biden.jpg]=3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c
)
# What the conversion must produce (also compiled into src/config.rs).
DETECTOR_SHA256="$(sed -n 's/^pub const DETECTOR_SHA256: &str = "\([0-9a-f]*\)";/\1/p' src/config.rs)"
EMBEDDER_SHA256="$(sed -n 's/^pub const EMBEDDER_SHA256: &str = "\([0-9a-f]*\)";/\1/p' src/config.rs)"

install_to=""
if [[ "${1:-}" == "--install" ]]; then
    install_to="${2:?--install needs a directory}"
elif [[ $# -gt 0 ]]; then
    sed -n '2,20p' "$0"
    exit 2
fi

log() { printf 'fetch-models: %s\n' "$*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$OUT/.complete" ]] && [[ "$(sha "$OUT/face_detection_short_range.onnx")" == "$DETECTOR_SHA256" ]] \
    && [[ "$(sha "$OUT/dlib_face_recognition_resnet_v1.onnx")" == "$EMBEDDER_SHA256" ]]; then
    log "cached in $OUT"
else
    command -v node >/dev/null && command -v npm >/dev/null || {
        log "installing node and npm (Debian)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    }
    work="$CACHE/models-work-v$RECIPE"
    mkdir -p "$work"
    venv="$CACHE/venv-models-v$RECIPE"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "${PY_PINS[0]}"; then
        log "python tools: ${PY_PINS[*]}"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PINS[@]}"
    fi
    if [[ ! -d "$work/node_modules/@vladmandic/face-api" ]]; then
        log "npm packages: ${NPM_PINS[*]}"
        (cd "$work" && { [[ -f package.json ]] || echo '{"private":true}' >package.json; } \
            && npm install --silent --no-audit --no-fund --ignore-scripts "${NPM_PINS[@]}" >/dev/null)
    fi
    if [[ ! -d "$work/sdist/face_recognition-1.3.0" ]]; then
        log "PyPI sdist: $SDIST (test photos)"
        rm -rf "$work/sdist" && mkdir -p "$work/sdist"
        "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: "$SDIST" -d "$work/sdist"
        tar xzf "$work"/sdist/face_recognition-1.3.0.tar.gz -C "$work/sdist"
    fi
    for path in "${!PINNED[@]}"; do
        got="$(sha "$work/$path")"
        [[ "$got" == "${PINNED[$path]}" ]] || { log "sha256 mismatch for $path: $got, pinned ${PINNED[$path]}"; exit 1; }
    done
    log "inputs verified (${#PINNED[@]} files, sha256)"

    tmp="$OUT.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    fd="$work/node_modules/@mediapipe/face_detection"
    fa="$work/node_modules/@vladmandic/face-api"
    # fp16-weight warnings of tflite2onnx are harmless; errors still fail the script.
    "$venv/bin/tflite2onnx" "$fd/face_detection_short_range.tflite" "$tmp/face_detection_short_range.onnx" 2>/dev/null
    "$venv/bin/python" scripts/models/canonicalize.py "$tmp/face_detection_short_range.onnx"
    "$venv/bin/python" scripts/models/build_embedder.py "$fa/model/face_recognition_model-weights_manifest.json" \
        "$fa/model/face_recognition_model.bin" "$tmp/dlib_face_recognition_resnet_v1.onnx"
    "$venv/bin/python" scripts/models/prepare_testset.py "$work/sdist/face_recognition-1.3.0/tests/test_images" "$fa/demo" "$tmp/testset"
    NODE_PATH="$work/node_modules" "$venv/bin/python" scripts/models/verify.py "$fd/face_detection_short_range.tflite" \
        "$tmp/face_detection_short_range.onnx" "$fa/model" "$tmp/dlib_face_recognition_resnet_v1.onnx" "$tmp/testset"
    for f in face_detection_short_range.onnx:$DETECTOR_SHA256 dlib_face_recognition_resnet_v1.onnx:$EMBEDDER_SHA256; do
        got="$(sha "$tmp/${f%%:*}")"
        if [[ "$got" != "${f##*:}" ]]; then
            log "${f%%:*} hashes to $got but src/config.rs expects ${f##*:}"
            log "(a tool version drifted, or the recipe changed: update the constant after reviewing the diff)"
            exit 1
        fi
    done
    touch "$tmp/.complete"
    rm -rf "$OUT" && mv "$tmp" "$OUT"
    log "models ready in $OUT"
fi
if [[ -n "$install_to" ]]; then
    install -d "$install_to"
    install -m 0644 "$OUT/face_detection_short_range.onnx" "$OUT/dlib_face_recognition_resnet_v1.onnx" "$install_to/"
    log "installed into $install_to"
fi
echo "$OUT"
