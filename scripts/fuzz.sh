#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside bytes (issue 16): AFL++ through
# cargo-afl on the stable toolchain (cargo-fuzz would need nightly). The targets are the
# binaries of fuzz/ (a workspace of its own), one per parser:
#
#   config_toml      the configuration file (and the fleet overlay merged into it)
#   fleet_command    MQTT command topics and payloads (plain and signed), typed arguments
#   control_line     lines on the local control socket
#   store_record     stored records and gallery files: envelope, checksum, postcard
#   update_artifact  update artifact header, signature check, manifest, ELF header
#   probe_http       HTTP requests to the probe, through the vendored tiny_http server
#   worker_frame     agent <-> pipeline-worker frames, a burst's matching and vote
#   jpeg_frame       camera JPEGs through zune-jpeg, the size and truncation checks
#
# Each target runs for the given time (or number of executions), one after the other (one
# fuzzer process at a time, at nice 19), from its seeds in fuzz/corpus/TARGET; its results
# go to fuzz/out/TARGET (AFL++'s queue, crashes/, hangs/, fuzzer_stats; replaced at each
# run). Prints executions, crashes and hangs per target and exits 1 when any target crashed
# (its first crashes also minimised with afl-tmin into fuzz/out/TARGET/minimized/). A crash
# replays with `fuzz/target/release/TARGET < FILE`; once fixed, it becomes a unit test.
#
# Installs cargo-afl (pinned; it builds AFL++ from the sources the crate ships, ~1.5 min)
# into the build cache on first use. The build (fuzz/target) takes ~4 min from cold on two
# cores, ~1.5 min after a change of the agent. CI runs `--smoke --cache-build`
# (scripts/test.sh).
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]  N s per target (default 60); all targets by default
#   scripts/fuzz.sh --execs N [TARGET...]      until N executions per target (at most 1 h each)
#   scripts/fuzz.sh --smoke [TARGET...]        10 s per target: the CI run
#   scripts/fuzz.sh --build                    install and build only
#   scripts/fuzz.sh --seeds                    rewrite the made seeds (artifacts, records, frames)
#   --cache-build                              build in the build cache, not fuzz/target: a new
#                                              checkout (CI) rebuilds only what changed
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.18.2
all_targets=(config_toml fleet_command control_line store_record update_artifact probe_http http_response worker_frame jpeg_frame)
seconds=
execs_goal=
cache_build=0
build_only=0
seeds=0
targets=()
while (($#)); do
    case "$1" in
        --seconds) seconds="${2:-}"; shift 2 || shift ;;
        --execs) execs_goal="${2:-}"; shift 2 || shift ;;
        --smoke) seconds=10; shift ;;
        --cache-build) cache_build=1; shift ;;
        --build) build_only=1; shift ;;
        --seeds) seeds=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t (targets: ${all_targets[*]})" >&2; exit 2; }
done
[[ -z "$execs_goal" || "$execs_goal" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --execs takes a whole number" >&2; exit 2; }
[[ -n "$seconds" ]] || seconds=$([[ -n "$execs_goal" ]] && echo 3600 || echo 60)
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds takes a whole number of seconds" >&2; exit 2; }

if [[ "$(id -u)" == 0 ]]; then cache=/var/cache/doorbell-agent; else cache="${XDG_CACHE_HOME:-$HOME/.cache}/doorbell-agent"; fi
tools="$cache/tools/cargo-afl-$version"
# cargo-afl keeps the AFL++ it builds (per rustc version) under the XDG data directory.
export XDG_DATA_HOME="$tools/share"
export PATH="$tools/bin:$PATH"
if [[ ! -x "$tools/bin/cargo-afl" ]]; then
    echo "installing cargo-afl $version and AFL++ into $tools (once, about 1.5 min)"
    nice -n 19 cargo install --locked --quiet cargo-afl --version "$version" --root "$tools"
fi
rustc_version=$(rustc --version | cut -d' ' -f2)
afl_fuzz() { compgen -G "$XDG_DATA_HOME/afl.rs/rustc-$rustc_version-*/afl.rs-$version/afl/bin/afl-fuzz" | head -n1; }
if [[ -z "$(afl_fuzz)" ]]; then
    echo "building AFL++ for rustc $rustc_version (once per Rust version)"
    nice -n 19 cargo afl config --build --force
fi
dicts="$(dirname "$(afl_fuzz)")/../share/afl/dictionaries"

# fuzz/Cargo.lock is the agent's Cargo.lock (the fuzzers build the versions the agent ships)
# plus afl's own dependencies: when the agent's dependencies change, it follows.
if ! (cd fuzz && cargo metadata --locked --format-version 1 >/dev/null 2>&1); then
    echo "fuzz/Cargo.lock: updating from Cargo.lock (the agent's dependencies changed)"
    cp Cargo.lock fuzz/Cargo.lock
    (cd fuzz && cargo metadata --format-version 1 >/dev/null)
fi
target_dir="$PWD/fuzz/target"
((cache_build)) && target_dir="$cache/fuzz-target"
bin="$target_dir/release"
echo "building the fuzz targets (cargo afl build --release, $target_dir)"
start=$SECONDS
# Only the parsers' crates get coverage instrumentation (see fuzz/rustc-wrapper.sh). Cargo
# does not see what the wrapper does: the hash of its code in RUSTFLAGS rebuilds everything
# when that changes.
wrapper_hash=$(grep -v '^ *#' fuzz/rustc-wrapper.sh | sha256sum | cut -c1-16)
(cd fuzz && CARGO_TARGET_DIR="$target_dir" RUSTC_WRAPPER="$PWD/rustc-wrapper.sh" \
    RUSTFLAGS="--cfg doorbell_fuzz_wrapper=\"$wrapper_hash\"" nice -n 19 cargo afl build --release --locked --quiet)
echo "built in $((SECONDS - start)) s"
if ((seeds)); then
    "$bin/seeds" fuzz/corpus
fi
((build_only || seeds)) && exit 0

# This machine, not a tuned fuzzing box: no CPU frequency or core_pattern changes, no core
# binding (other builds share the two cores), plain status lines instead of the screen UI.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
export AFL_FAST_CAL=1 AFL_NO_CRASH_README=1

# Dictionaries: AFL++'s for each target's format, and ours (fuzz/dict: key and command names).
dicts_of() {
    case "$1" in
        config_toml) echo "$dicts/toml.dict fuzz/dict/config_toml.dict" ;;
        fleet_command | control_line) echo "$dicts/json.dict fuzz/dict/commands.dict" ;;
        probe_http | http_response) echo "$dicts/http.dict" ;;
        jpeg_frame) echo "$dicts/jpeg.dict" ;;
    esac
}
# Time limit of one execution (ms): the probe harness waits on server threads, JPEGs decode.
timeout_of() {
    case "$1" in
        probe_http) echo 3000 ;;
        jpeg_frame) echo 2000 ;;
        *) echo 1000 ;;
    esac
}
stat() { sed -n "s/^$1 *: *//p" "$2" | head -n1; }

rows=()
crashed=()
for t in "${targets[@]}"; do
    out="fuzz/out/$t"
    rm -rf "$out"
    mkdir -p "$out"
    args=(-i "fuzz/corpus/$t" -o "$out" -V "$seconds" -t "$(timeout_of "$t")")
    [[ -n "$execs_goal" ]] && args+=(-E "$execs_goal")
    for dict in $(dicts_of "$t"); do
        args+=(-x "$dict")
    done
    echo "fuzzing $t for $seconds s${execs_goal:+ or $execs_goal executions}"
    if ! nice -n 19 cargo afl fuzz "${args[@]}" -- "$bin/$t" >"$out/afl.log" 2>&1; then
        tail -n 30 "$out/afl.log" >&2
        echo "fuzz.sh: afl-fuzz failed on $t (log: $out/afl.log)" >&2
        exit 1
    fi
    stats="$out/default/fuzzer_stats"
    execs=$(stat execs_done "$stats")
    run_time=$(stat run_time "$stats")
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    rows+=("$(printf '%-16s %8s %12s %9s %8s %6s' "$t" "$run_time" "$execs" "$((execs / (run_time > 0 ? run_time : 1)))" "$crashes" "$hangs")")
    if ((crashes > 0)); then
        crashed+=("$t")
        # The first three, minimised; kept only if the result still crashes on its own (a
        # target with threads, probe_http, can mislead afl-tmin).
        mkdir -p "$out/minimized"
        for crash in $(find "$out/default/crashes" -name 'id:*' | sort | head -n 3); do
            min="$out/minimized/$(basename "$crash" | cut -d, -f1)"
            timeout 120 nice -n 19 cargo afl tmin -i "$crash" -o "$min" -t "$(timeout_of "$t")" \
                -- "$bin/$t" >/dev/null 2>&1 || true
            if [[ -f "$min" ]] && "$bin/$t" <"$min" >/dev/null 2>&1; then
                rm -f "$min"
            fi
        done
    fi
done

echo
printf '%-16s %8s %12s %9s %8s %6s\n' target seconds execs execs/s crashes hangs
printf '%s\n' "${rows[@]}"
if ((${#crashed[@]})); then
    echo
    for t in "${crashed[@]}"; do
        echo "CRASH in $t: fuzz/out/$t/default/crashes/ (minimised: fuzz/out/$t/minimized/)"
        echo "  replay: $bin/$t < FILE"
    done
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no crash"
