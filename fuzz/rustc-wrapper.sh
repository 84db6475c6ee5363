#!/usr/bin/env bash
# RUSTC_WRAPPER of the fuzz build (scripts/fuzz.sh): cargo-afl instruments and optimises
# every crate alike (-C opt-level=3 -C codegen-units=1 plus the coverage passes, through
# RUSTFLAGS). The fuzz targets run only the parsers, and coverage only pays where they run;
# the inference engine (tract, ~60 % of the dependency graph with `faces`) and the agent's
# runtime crates are linked but never run. So only the packages below keep cargo-afl's
# flags (with parallel codegen); every other one is built without coverage instrumentation
# and debug info, at opt-level 0 with parallel codegen, except the crypto that the artifact
# target runs on every input (opt-level 3). That takes the cold build on two cores from
# 11.5 min (tract-core alone: 224 s even at opt-level 1) to 3-4.5 min.
set -euo pipefail

# The parsers and everything they run: the agent and the crates of its workspace (the
# artifact, the HTTP client, the [update] settings), the probe's HTTP server, serde_json,
# toml, postcard, zune-jpeg and the small crates in their paths.
instrumented=" doorbell-agent-fuzz doorbell-agent doorbell-artifact doorbell-base doorbell-slotctl
    afl tiny_http ascii chunked_transfer httpdate
    serde serde_core serde_json serde_spanned toml toml_datetime toml_edit
    toml_write winnow postcard cobs zune-jpeg zune-core base64 humantime crc32fast indexmap
    hashbrown memchr itoa zmij "
# Run on every input of update_artifact (signing, verifying, hashing), not worth covering.
optimised=" sha2 curve25519-dalek ed25519-dalek "

rustc="$1"
shift
package="${CARGO_PKG_NAME:-}"
if [[ -z "$package" ]]; then
    exec "$rustc" "$@"
fi
if [[ "$instrumented" == *[[:space:]]"$package"[[:space:]]* ]]; then
    # Parallel codegen: the agent's crate is the critical path of the build (42 s so).
    extra=(-C codegen-units=16)
    # cargo-afl turns debug assertions and overflow checks on everywhere. The agent and its
    # patched tiny_http keep them (an overflow there is a bug even where a release build
    # wraps); the other crates are fuzzed as the agent ships them, without (zune-jpeg's
    # debug_assert! on its bit reader fires where the release build saturates, by design).
    case "$package" in
        doorbell-agent | doorbell-agent-fuzz | tiny_http) ;;
        *) extra+=(-C debug-assertions=off -C overflow-checks=off) ;;
    esac
    exec "$rustc" "$@" "${extra[@]}"
fi
args=()
while (($#)); do
    case "$1" in
        -C)
            case "${2:-}" in
                passes=sancov* | llvm-args=-sanitizer-coverage*) ;;
                *) args+=("$1" "${2:-}") ;;
            esac
            shift 2 || shift
            ;;
        -Cpasses=sancov* | -Cllvm-args=-sanitizer-coverage*) shift ;;
        *) args+=("$1"); shift ;;
    esac
done
level=0
[[ "$optimised" == *" $package "* ]] && level=3
exec "$rustc" "${args[@]}" -C opt-level=$level -C codegen-units=16 -C debuginfo=0
