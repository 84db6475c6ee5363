#!/usr/bin/env bash
# Proves that the project still builds with its MSRV (Cargo.toml `rust-version`): every
# target (lib, bins, tests, benches, examples) with all features is type-checked by Debian
# bookworm's rustc/cargo of exactly that version (scripts/debian-rust.sh), with the locked
# dependency versions. Installs and caches what it needs on first use. CI runs it
# (scripts/test.sh).
#
#   scripts/msrv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/debian-rust.sh
source scripts/debian-rust.sh

dr_use_msrv
dr_prune
echo "==> MSRV: cargo check --all-targets --all-features with Debian rustc $DR_VERSION"
t0=$SECONDS
dr_cargo check --locked --all-targets --all-features
echo "MSRV $DR_VERSION: the project builds ($((SECONDS - t0)) s)"
