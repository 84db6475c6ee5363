#!/usr/bin/env bash
# make-bundle.sh — puts together what scripts/install.sh installs on a device: one directory
# per target, copied to the device (deploy.sh does it over ssh) or into an image (flash.sh).
#
#   scripts/make-bundle.sh --target TRIPLE --out DIR [--bin-dir DIR] [--key KEYFILE] [--version V]
#                          [--no-models]
#
#   --target   aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf,
#              arm-unknown-linux-gnueabihf (built with cross) or x86_64-unknown-linux-gnu
#   --bin-dir  where doorbell-agent and doorbell-slotctl are (default: target/device/TRIPLE,
#              from scripts/cross-build.sh; target/TRIPLE/release for cross's ARMv6 build;
#              target/release for x86_64)
#   --key      the release key: adds doorbell-agent.dbu, the signed artifact install.sh
#              upgrades an installed device with (scripts/sign-release.sh)
#   --version  the version the artifact claims (default: Cargo.toml's)
#   --no-models  leave out the face models (a build without the `faces` feature); by default
#              the two .onnx files of scripts/fetch-models.sh (its cache, built once) go into
#              models/, which install.sh puts where the agent looks for them
#   --out      the bundle directory (replaced)
#
# DIR/: install.sh doorbell-agent doorbell-slotctl systemd/ config.toml sysusers.conf TARGET
# VERSION [models/*.onnx] [doorbell-agent.dbu]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

target="" out="" bin_dir="" key="" version="" models=1
while (($#)); do
    case "$1" in
        --target) target="$2"; shift ;;
        --out) out="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --key) key="$2"; shift ;;
        --version) version="$2"; shift ;;
        --no-models) models=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) echo "make-bundle.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$target" && -n "$out" ]] || { echo "make-bundle.sh: --target and --out are required (see --help)" >&2; exit 2; }
if [[ -z "$bin_dir" ]]; then
    case "$target" in
        x86_64-unknown-linux-gnu) bin_dir="$REPO/target/release" ;;
        arm-unknown-linux-gnueabihf) bin_dir="$REPO/target/$target/release" ;;
        *) bin_dir="$REPO/target/device/$target" ;;
    esac
fi
for b in doorbell-agent doorbell-slotctl; do
    [[ -f "$bin_dir/$b" ]] || { echo "make-bundle.sh: no $bin_dir/$b (build it: scripts/cross-build.sh $target)" >&2; exit 1; }
done
[[ -n "$version" ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)

[[ ! -e "$out" || -f "$out/TARGET" || -z "$(ls -A "$out")" ]] || { echo "make-bundle.sh: $out exists and is not a bundle" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/systemd"
install -m 0755 "$REPO/scripts/install.sh" "$out/install.sh"
install -m 0755 "$bin_dir/doorbell-agent" "$bin_dir/doorbell-slotctl" "$out/"
install -m 0644 "$REPO"/systemd/doorbell-agent*.{service,path,timer} "$out/systemd/"
install -m 0644 "$REPO/packaging/config.toml" "$REPO/packaging/sysusers.conf" "$out/"
if ((models)); then
    cache=$("$REPO/scripts/fetch-models.sh" | tail -n1)
    mkdir -p "$out/models"
    install -m 0644 "$cache"/*.onnx "$out/models/"
fi
echo "$target" >"$out/TARGET"
echo "$version" >"$out/VERSION"
if [[ -n "$key" ]]; then
    "$REPO/scripts/sign-release.sh" --key "$key" --target "$target" --binary "$bin_dir/doorbell-agent" \
        --version "$version" --out "$out/doorbell-agent.dbu" >/dev/null
fi
echo "bundle for $target ($version) in $out: $(du -sh "$out" | cut -f1)${key:+, signed artifact $(stat -c %s "$out/doorbell-agent.dbu") bytes}"
