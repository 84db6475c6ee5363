#!/usr/bin/env bash
# test-ship.sh — the shipping tests: install.sh, the .deb, deploy.sh and flash.sh on devices
# that are real systemd 252 machines booted with systemd-nspawn (scripts/testbed.sh). Needs root.
#
#   scripts/test-ship.sh [install] [deb] [deploy] [flash]      (default: all four)
#
#   install  tests/ship/install.sh: fresh install, re-run, config edits kept, upgrade through
#            the A/B path, units replaced during a trial without a restart, uninstall, purge
#   deb      tests/ship/deb.sh: the .deb built with cargo-deb (x86_64 here, the same maintainer
#            scripts as arm64/armhf): install, apt-upgrade during a trial, upgrade carrying a
#            newer agent, remove, purge; and the arm64 package's contents
#   deploy   tests/ship/deploy.sh: deploy.sh over ssh to two containers running sshd: fresh
#            installs in parallel, A/B upgrade, a bad deploy that rolls back by itself
#   flash    tests/ship/flash.sh: a disk image with a FAT boot and an ext4 root partition built
#            from the testbed's root, flash.sh, then that root booted until /health answers
#
# The "devices" are x86_64 containers: they run this machine's release build (cargo build
# --release) of the same sources; versions 0.2.0-0.4.0 are that binary with a trailer (as in
# tests/systemd_update.rs), signed as those versions with a key made for the run.
# scripts/test.sh runs `install` always and the rest with DOORBELL_SHIP_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "$(id -u)" == 0 ]] || { echo "test-ship.sh: needs root (systemd-nspawn, losetup, dpkg in containers)" >&2; exit 1; }
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(install deb deploy flash)
for s in "${scenarios[@]}"; do
    [[ -f "tests/ship/$s.sh" ]] || { echo "test-ship.sh: unknown scenario $s (install, deb, deploy, flash)" >&2; exit 2; }
done

scripts/test-deps.sh >/dev/null
echo "==> release build of the agent for the x86_64 test devices"
cargo build --locked --release --bin doorbell-agent --bin doorbell-slotctl

WORK=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-ship.XXXXXX")
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT
# (The build-host tool as scripts/sign-release.sh runs it: a debug build.)
cargo run --quiet --locked --bin doorbell-release -- keygen --out "$WORK/release" >/dev/null
chmod 644 "$WORK/release.pub"

# Versions: the release build is 0.1.0; 0.2.0, 0.3.0, 0.4.0 are distinct binaries (a trailer).
X86=x86_64-unknown-linux-gnu
for v in 0.1.0 0.2.0 0.3.0 0.4.0; do
    mkdir -p "$WORK/bin-$v"
    cp target/release/doorbell-agent target/release/doorbell-slotctl "$WORK/bin-$v/"
    [[ "$v" == 0.1.0 ]] || printf '\nDOORBELL-BUILD:%s\n' "$v" >>"$WORK/bin-$v/doorbell-agent"
    scripts/make-bundle.sh --target "$X86" --bin-dir "$WORK/bin-$v" --key "$WORK/release.key" --version "$v" \
        --out "$WORK/bundle-$v" >/dev/null
done
chmod -R a+rX "$WORK"

rc=0
results=()
for s in "${scenarios[@]}"; do
    echo
    echo "==> shipping scenario: $s"
    t0=$SECONDS
    if timeout --kill-after=20 900 bash "tests/ship/$s.sh" "$WORK"; then r=passed; else r="FAILED (exit $?)"; rc=1; fi
    results+=("$s: $r in $((SECONDS - t0)) s")
done
echo
printf '%s\n' "${results[@]}"
exit $rc
