#!/usr/bin/env bash
# Cross-builds the stripped release binaries for a Raspberry Pi without Docker, with Debian's
# Rust (scripts/debian-rust.sh) and Debian's GNU cross linkers; checks the binary against its
# size budget and the glibc it needs, and runs a smoke test under qemu-user. Installs what it
# needs when missing (apt, idempotent). CI runs it for aarch64 (scripts/test.sh).
#
#   scripts/cross-build.sh [--no-default-features] [--features LIST] [--no-smoke] TARGET
#
#   aarch64-unknown-linux-gnu      Pi Zero 2 W, 3, 4, 5 on a 64-bit OS   Debian rustc-web (1.96)
#   armv7-unknown-linux-gnueabihf  Pi 2-5 on a 32-bit OS                 Debian rustc 1.85 (MSRV)
#   arm-unknown-linux-gnueabihf    Pi Zero / Pi 1 (ARMv6): use `cross`, see docs/deploying.md
#
# Results: target/device/TARGET/ (copies; cargo's target directory is in the build cache).
# Budgets: doorbell-agent <= 4 MiB, <= 14 MiB with the `faces` feature; its zstd-compressed
# update artifact <= 6 MiB; glibc symbol versions <= 2.36 (Raspberry Pi OS bookworm). The
# smoke test runs only commands that do not open the sled store (sled's open hangs under
# qemu-user): the agent's --version and check-config, doorbell-slotctl pre-start/status/verify
# on a temp layout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/debian-rust.sh
source scripts/debian-rust.sh

usage() {
    sed -n '7p' "$0" | sed 's/^# *//' >&2
    exit 2
}

cargo_features=()
smoke=1
target=""
while (($#)); do
    case "$1" in
        --no-default-features) cargo_features+=("$1") ;;
        --features) (($# > 1)) || usage; cargo_features+=(--features "$2"); shift ;;
        --no-smoke) smoke=0 ;;
        -h | --help) usage ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) [[ -z "$target" ]] || usage; target="$1" ;;
    esac
    shift
done
[[ -n "$target" ]] || usage

MIB=$((1024 * 1024))
GLIBC_MAX=2.36
ARTIFACT_BUDGET=$((6 * MIB))

case "$target" in
    aarch64-unknown-linux-gnu)
        gnu=aarch64-linux-gnu deb_arch=arm64 qemu=qemu-aarch64 machine=AArch64 toolchain=system ;;
    armv7-unknown-linux-gnueabihf)
        gnu=arm-linux-gnueabihf deb_arch=armhf qemu=qemu-arm machine=ARM toolchain=msrv ;;
    arm-unknown-linux-gnueabihf)
        # Debian's armhf cross toolchain is ARMv7: its crt1.o/crti.o/libc_nonshared.a are
        # Thumb-2 (`_start` begins with mov.w), so an ARMv6 binary linked with it dies with
        # SIGILL before main on a Pi Zero/1 (checked with qemu-arm -cpu arm1176). cross's image
        # for this target carries a real ARMv6 toolchain and glibc.
        dr_die "$target (Pi Zero / Pi 1) needs an ARMv6 C toolchain that Debian does not ship; build it with: cross build --release --target $target" ;;
    *) dr_die "unknown target $target (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, arm-unknown-linux-gnueabihf)" ;;
esac

# The `faces` feature raises the budget; it is on when asked for or when it is a default one.
faces=0
if [[ " ${cargo_features[*]} " == *faces* ]]; then
    faces=1
elif [[ " ${cargo_features[*]} " != *--no-default-features* ]] &&
    sed -n 's/^default *= *\[\(.*\)\]/\1/p' Cargo.toml | grep -q '"faces"'; then
    faces=1
fi
budget=$((faces ? 14 * MIB : 4 * MIB))

dr_install "gcc-$gnu" "libc6-dev-$deb_arch-cross" qemu-user zstd
"dr_use_$toolchain" "$target"
dr_prune

# Device binaries only (not build-host tools).
bins=()
for b in doorbell-agent doorbell-slotctl; do bins+=(--bin "$b"); done

env_target=$(echo "$target" | tr '[:lower:]-' '[:upper:]_')
env_cc=$(echo "$target" | tr '-' '_')
echo "==> $target: release build with Debian rustc $DR_VERSION ($toolchain) ${cargo_features[*]}"
t0=$SECONDS
# C and assembly of dependencies (cc crate: ring, tract's kernels) use the same cross gcc.
export "CARGO_TARGET_${env_target}_LINKER=$gnu-gcc" "CC_${env_cc}=$gnu-gcc" "AR_${env_cc}=$gnu-ar"
dr_cargo build --locked --release --target "$target" "${bins[@]}" ${cargo_features[@]+"${cargo_features[@]}"}
echo "build: $((SECONDS - t0)) s"

out="$DR_TARGET_DIR/$target/release"
dest="target/device/$target"
mkdir -p "$dest"
agent="$out/doorbell-agent"

# Captured first: `readelf | grep -q` would let grep's early exit fail the pipeline.
header=$("$gnu-readelf" -h "$agent")
sections=$("$gnu-readelf" -S "$agent")
[[ "$header" =~ Machine:\ +$machine ]] || dr_die "$agent is not an $machine executable"
[[ "$sections" != *.symtab* ]] || dr_die "$agent is not stripped"
needed=$("$gnu-readelf" -d "$agent" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
glibc=$("$gnu-objdump" -T "$agent" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
# Packed relocations (build.rs) need the dynamic loader of glibc 2.36.
if [[ "$("$gnu-readelf" -V "$agent")" == *GLIBC_ABI_DT_RELR* ]]; then glibc=$(printf '%s\n' "$glibc" 2.36 | sort -V | tail -n1); fi
if [[ "$(printf '%s\n' "$glibc" "$GLIBC_MAX" | sort -V | tail -n1)" != "$GLIBC_MAX" ]]; then
    dr_die "$agent needs glibc $glibc; Raspberry Pi OS bookworm has $GLIBC_MAX"
fi

for ((i = 1; i < ${#bins[@]}; i += 2)); do
    b="${bins[i]}"
    install -m 0755 "$out/$b" "$dest/$b"
    size=$(stat -c %s "$out/$b")
    awk -v b="$b" -v s="$size" -v d="$dest/$b" 'BEGIN { printf "%-18s %9d bytes (%.2f MiB)  %s\n", b, s, s / 1048576, d }'
done
size=$(stat -c %s "$agent")
echo "needs: $needed(glibc >= $glibc)"
if ((size > budget)); then
    dr_die "doorbell-agent is $size bytes, over its budget of $((budget / MIB)) MiB (faces feature: $faces)"
fi
echo "size budget: $size <= $budget bytes ($((budget / MIB)) MiB, faces feature: $faces)"
# What a fleet update sends: the agent compressed as scripts/sign-release.sh compresses it
# (zstd -19; the signed header adds ~400 bytes). Budget 6 MiB (with the faces feature).
artifact=$(zstd -19 -q -c "$agent" | wc -c)
((artifact <= ARTIFACT_BUDGET)) || dr_die "the compressed artifact is $artifact bytes, over its budget of $((ARTIFACT_BUDGET / MIB)) MiB"
awk -v a="$artifact" -v s="$size" -v b="$ARTIFACT_BUDGET" 'BEGIN { printf "update artifact payload (zstd -19): %d bytes (%.2f MiB, %.0f %% of the binary) <= %d\n", a, a / 1048576, a * 100 / s, b }'

((smoke)) || exit 0

# Smoke test of the target binary under qemu-user, with the cross glibc as its root.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { timeout 60 "$qemu" -L "/usr/$gnu" "$@"; }
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)

got=$(run "$agent" --version)
[[ "$got" == "doorbell-agent $version" ]] || dr_die "--version printed '$got', expected 'doorbell-agent $version'"

cat >"$tmp/pi.toml" <<EOF
data_dir = "$tmp/data"
[gpio]
backend = "rppal"
pin = 17
[probe]
listen = "127.0.0.1:8080"
EOF
run "$agent" -c "$tmp/pi.toml" check-config >"$tmp/out" || dr_die "check-config of a valid Pi config failed: $(cat "$tmp/out")"
grep -q "^$tmp/pi.toml: valid" "$tmp/out" || dr_die "check-config printed: $(cat "$tmp/out")"
grep -q '^backend = "rppal"' "$tmp/out" || dr_die "check-config did not print the effective config: $(cat "$tmp/out")"

printf '[gpio]\npin = 99\n' >"$tmp/bad.toml"
rc=0
run "$agent" -c "$tmp/bad.toml" check-config >/dev/null 2>"$tmp/err" || rc=$?
((rc == 78)) || dr_die "check-config of an invalid config exited $rc, expected 78: $(cat "$tmp/err")"
grep -q 'gpio.pin' "$tmp/err" || dr_die "the config error does not name the key: $(cat "$tmp/err")"

# doorbell-slotctl on a layout in the temp dir: `pre-start` bootstraps the slot state from slot
# a (this build's agent), `status` and `verify` read it back. slotctl asks the slot's binary for
# its version; under qemu-user that exec fails (no binfmt_misc), so the version is "unknown"
# here, while the sha256 and size it records must be the agent's.
slotctl="$out/doorbell-slotctl"
ctl() { run "$slotctl" --config "$tmp/pi.toml" --root "$tmp/opt" --state-dir "$tmp/state" --no-systemctl "$@"; }
mkdir -p "$tmp/opt/slots/a"
cp "$agent" "$tmp/opt/slots/a/doorbell-agent"
ln -s slots/a "$tmp/opt/current"
ctl pre-start 2>"$tmp/err" || dr_die "doorbell-slotctl pre-start failed: $(cat "$tmp/err")"
ctl status >"$tmp/out" 2>&1 || dr_die "doorbell-slotctl status failed: $(cat "$tmp/out")"
sha=$(sha256sum "$agent" | cut -d' ' -f1)
grep -q '^[^ ]* committed in slot a$' "$tmp/out" || dr_die "doorbell-slotctl status: $(cat "$tmp/out")"
grep -q "^  slot a: [^ ]* ($size bytes, sha256 ${sha:0:16})$" "$tmp/out" || dr_die "doorbell-slotctl status does not describe slot a ($size bytes, sha256 ${sha:0:16}): $(cat "$tmp/out")"
json=$(ctl status --json) || dr_die "doorbell-slotctl status --json failed"
grep -q "\"sha256\": \"$sha\"" <<<"$json" || dr_die "doorbell-slotctl status --json lacks the agent's sha256 $sha: $json"
ctl verify >"$tmp/out" 2>&1 || dr_die "doorbell-slotctl verify failed: $(cat "$tmp/out")"
[[ "$(readlink "$tmp/opt/committed")" == slots/a ]] || dr_die "doorbell-slotctl pre-start did not link committed -> slots/a"

echo "smoke test under $qemu: --version, check-config (valid: exit 0, invalid: exit 78 naming the key),"
echo "  doorbell-slotctl pre-start/status/verify on a temp layout (slot a: $size bytes, sha256 ${sha:0:16}) passed"
