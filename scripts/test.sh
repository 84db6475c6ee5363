#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# Installs what the tests need when it is missing (Mosquitto; the systemd testbed installs
# systemd-nspawn and debootstrap itself), then: formatting, the documentation's links
# (scripts/check-docs.sh), the crate and module graph of ARCHITECTURE.md (scripts/deps-graph.py), clippy, the supply-chain check
# (scripts/deny.sh), every test of the agent
# (unit, real-binary end-to-end, real systemd in nspawn), a short footprint check against the
# size/memory/start-up budgets, the vendored crates' patch tests, a fuzzing smoke of every
# parser of outside bytes (scripts/fuzz.sh --smoke), the device build (aarch64
# release binary with Debian's Rust: size budget, qemu smoke test; scripts/cross-build.sh
# installs its toolchain), the MSRV build (scripts/msrv.sh), the device test (scripts/test-device.sh:
# the flashed SD image booted on an emulated Pi Zero 2 W, ~7 min; DOORBELL_SKIP_DEVICE_TEST=1
# skips it explicitly) and the shipping tests
# (scripts/test-ship.sh: install.sh and flash.sh; DOORBELL_SHIP_TESTS="install deb deploy
# flash" adds the .deb and deploy.sh, "none" skips them). Benchmarks (`cargo bench`)
# and the full 5-minute footprint run (`scripts/footprint.py`) are run separately.
# Needs root for the systemd test (DOORBELL_SKIP_SYSTEMD=1 skips it explicitly).
# DOORBELL_DEVICE_TARGETS (default aarch64-unknown-linux-gnu) lists the device builds;
# DOORBELL_SKIP_DEVICE_BUILD=1 skips them and the MSRV build explicitly (non-Debian hosts).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

log "test dependencies"
scripts/test-deps.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "docs: links"
scripts/check-docs.sh

log "ARCHITECTURE.md: the dependency graph is the code's (scripts/deps-graph.py --check)"
scripts/deps-graph.py --check

log "cargo clippy (all targets, warnings are errors; with and without the test-only faults)"
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features fault-injection -- -D warnings
# What runs on a device never unwraps, expects or panics; checked with and without `faces`.
for features in "--features fault-injection" --no-default-features; do
    # shellcheck disable=SC2086 # one or two words
    cargo clippy --locked --lib --bins $features -- -D warnings -D clippy::unwrap_used -D clippy::expect_used -D clippy::panic
done

log "supply chain: cargo-deny offline (licences, bans, sources, RustSec snapshot)"
scripts/deny.sh

# fault-injection (test builds only, never a release) lets the systemd update tests inject
# crashes, hangs and failed checks into agent binaries and kill slotctl at every durable step.
log "cargo test --features fault-injection"
cargo test --locked --features fault-injection
# The build without `faces` (a button-only doorbell): its unit tests. The end-to-end tests
# assume recognition, so they run with it only.
log "cargo test --no-default-features --lib (without faces)"
cargo test --locked --no-default-features --lib

log "footprint budgets (release build: binary size, start to READY, idle RSS and CPU)"
scripts/footprint.py --duration 20 --starts 5

log "the README's two commands, verbatim, on a fresh clone (scripts/readme-commands.sh)"
scripts/readme-commands.sh

log "vendored crates: the tests of our patches"
cargo test --manifest-path vendor/tiny_http/Cargo.toml --test limits
cargo test --manifest-path vendor/rpi-pal/Cargo.toml --lib no_regex_patch

# Each parser of outside bytes for 10 s under AFL++ (fuzz/); the build stays in the build
# cache between runs (~4 min from cold, ~1.5 min after a change of the agent).
log "fuzzing smoke: every parser of outside bytes (scripts/fuzz.sh --smoke)"
scripts/fuzz.sh --smoke --cache-build

if [[ "${DOORBELL_SKIP_DEVICE_BUILD:-}" == 1 ]]; then
    log "SKIPPED: device builds and MSRV build (DOORBELL_SKIP_DEVICE_BUILD=1)"
else
    for target in ${DOORBELL_DEVICE_TARGETS:-aarch64-unknown-linux-gnu}; do
        log "device build: $target release binary (Debian's Rust), size budget, qemu smoke test"
        scripts/cross-build.sh "$target"
    done
    log "MSRV: the project builds with Debian's rustc of Cargo.toml's rust-version"
    scripts/msrv.sh
    if [[ "${DOORBELL_SKIP_DEVICE_TEST:-}" == 1 ]]; then
        log "SKIPPED: the device test (DOORBELL_SKIP_DEVICE_TEST=1)"
    else
        log "device test: the flashed SD image on an emulated Pi Zero 2 W (scripts/test-device.sh)"
        scripts/test-device.sh
    fi
fi

# Shipping (install.sh, the .deb, deploy.sh, flash.sh) on devices booted with nspawn; needs
# root like the systemd tests. The default pair costs ~1 min; all four ~3 min
# (docs/testing.md, "Shipping tests").
ship="${DOORBELL_SHIP_TESTS:-install flash}"
if [[ "${DOORBELL_SKIP_SYSTEMD:-}" == 1 || "$ship" == none ]]; then
    log "SKIPPED: shipping tests (DOORBELL_SKIP_SYSTEMD=1 or DOORBELL_SHIP_TESTS=none)"
else
    log "shipping tests: $ship (scripts/test-ship.sh)"
    # shellcheck disable=SC2086 # a list of scenario names
    scripts/test-ship.sh $ship
fi

log "all tests passed"
