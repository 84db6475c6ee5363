#!/usr/bin/env bash
# build-deb.sh — the Debian package of doorbell-agent for one target, with cargo-deb (its
# metadata is [package.metadata.deb] in Cargo.toml), from binaries already built: no build here.
#
#   scripts/build-deb.sh --target TRIPLE [--bin-dir DIR] [--key KEYFILE] [--version V]
#                        [--revision N] [--out DIR]
#
#   --target    aarch64-unknown-linux-gnu (arm64), armv7-unknown-linux-gnueabihf (armhf),
#               x86_64-unknown-linux-gnu (amd64: what the testbed runs)
#   --bin-dir   doorbell-agent and doorbell-slotctl (default: target/device/TRIPLE from
#               scripts/cross-build.sh; target/release for x86_64)
#   --key       the release key: the package then carries the signed artifact that upgrades an
#               installed device through the A/B path (without it, a package upgrade installs
#               the new slotctl and units but cannot update the agent in the slots)
#   --version   the agent's version (default: Cargo.toml's); --revision the Debian revision (1)
#   --out       where the .deb goes (default: target/debian)
#
# The face models come from scripts/fetch-models.sh (its cache, built once).
# Installs cargo-deb (pinned, from crates.io) into /var/cache/doorbell-agent/tools the first
# time (~4 min on 2 cores); later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CARGO_DEB_VERSION=3.8.0

target="" bin_dir="" key="" version="" revision=1 out="$REPO/target/debian"
while (($#)); do
    case "$1" in
        --target) target="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --key) key="$2"; shift ;;
        --version) version="$2"; shift ;;
        --revision) revision="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$target" ]] || { echo "build-deb.sh: --target is required (see --help)" >&2; exit 2; }
if [[ -z "$bin_dir" ]]; then
    if [[ "$target" == x86_64-unknown-linux-gnu ]]; then bin_dir=target/release; else bin_dir="target/device/$target"; fi
fi
for b in doorbell-agent doorbell-slotctl; do
    [[ -f "$bin_dir/$b" ]] || { echo "build-deb.sh: no $bin_dir/$b (scripts/cross-build.sh $target builds it)" >&2; exit 1; }
done
[[ -n "$version" ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# cargo-deb, installed once per machine (as root into the shared cache, else the user's).
if [[ "$(id -u)" == 0 ]]; then tools=/var/cache/doorbell-agent/tools; else tools="${XDG_CACHE_HOME:-$HOME/.cache}/doorbell-agent-tools"; fi
cargo_deb="$tools/cargo-deb-$CARGO_DEB_VERSION/bin/cargo-deb"
if [[ ! -x "$cargo_deb" ]]; then
    echo "==> installing cargo-deb $CARGO_DEB_VERSION into $tools (once)"
    mkdir -p "$tools"
    (
        flock -w 900 9 || { echo "build-deb.sh: timed out waiting for $tools/.lock" >&2; exit 1; }
        [[ -x "$cargo_deb" ]] || cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION" \
            --root "$tools/cargo-deb-$CARGO_DEB_VERSION"
    ) 9>"$tools/.lock"
fi

# cargo-deb reads the binaries from CARGO_TARGET_DIR/TRIPLE/release ("target/release/" in the
# asset list), so the staging directory is laid out like that. Files, not symlinks: with
# preserve-symlinks (for the CLI link) cargo-deb would package a symlink as a symlink.
stage=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
rel="$stage/$target/release"
mkdir -p "$rel/deb/lib" "$rel/deb/units" "$rel/deb/bin" "$rel/deb/models"
cp "$bin_dir/doorbell-agent" "$bin_dir/doorbell-slotctl" "$rel/"
# The face models go to /usr/share/doorbell-agent/models, the agent's second place to look.
cp "$(scripts/fetch-models.sh | tail -n1)"/*.onnx "$rel/deb/models/"
# A package must not install into /usr/local: its slotctl is /usr/sbin/doorbell-slotctl, and
# the units (otherwise the repository's, unchanged) say so.
for u in systemd/doorbell-agent*.{service,path,timer}; do
    sed 's|/usr/local/sbin/doorbell-slotctl|/usr/sbin/doorbell-slotctl|g' "$u" >"$rel/deb/units/$(basename "$u")"
done
if grep -rn '^[^#]*/usr/local' "$rel/deb/units" >&2; then echo "build-deb.sh: the units above still run something from /usr/local" >&2; exit 1; fi
echo "$version" >"$rel/deb/lib/VERSION"
ln -s /opt/doorbell-agent/current/doorbell-agent "$rel/deb/bin/doorbell-agent"
if [[ -n "$key" ]]; then
    scripts/sign-release.sh --key "$key" --target "$target" --binary "$bin_dir/doorbell-agent" \
        --version "$version" --out "$rel/deb/lib/doorbell-agent.dbu" >/dev/null
fi

mkdir -p "$out"
deb=$(CARGO_TARGET_DIR="$stage" "$cargo_deb" --no-build --no-strip --target "$target" \
    --deb-version "$version-$revision" --output "$out" 2>&1 | tail -n1)
[[ -f "$deb" ]] || { echo "build-deb.sh: cargo-deb failed: $deb" >&2; exit 1; }
echo "$deb ($(stat -c %s "$deb") bytes${key:+, with the signed artifact})"
