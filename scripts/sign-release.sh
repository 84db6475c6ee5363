#!/usr/bin/env bash
# sign-release.sh — turns an agent build into a signed update artifact (.dbu).
#
#   scripts/sign-release.sh --key KEYFILE --binary PATH --target TRIPLE [--version V] [--out FILE]
#
#   --key      secret key from `cargo run --bin doorbell-release -- keygen --out release`
#              (release.key; keep it off the devices; release.pub goes into update.public_key)
#   --binary   the release build, e.g. target/aarch64-unknown-linux-gnu/release/doorbell-agent
#   --target   the triple it was built for (checked against the binary's ELF header)
#   --version  default: the version in Cargo.toml
#   --out      default: doorbell-agent-VERSION-TARGET.dbu
#
# Compresses with zstd -19 (devices decompress with a pure-Rust decoder), then
# `doorbell-release sign` checks the compressed payload decompresses to the binary, writes the
# manifest {version, target, sha256, size, ...} and signs it with ed25519.
set -euo pipefail
cd "$(dirname "$0")/.."

key="" binary="" target="" version="" out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --key) key="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --target) target="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) echo "sign-release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$key" && -n "$binary" && -n "$target" ]] || { echo "sign-release.sh: --key, --binary and --target are required (see --help)" >&2; exit 2; }
command -v zstd >/dev/null || { echo "sign-release.sh: needs the zstd tool (apt-get install zstd)" >&2; exit 1; }
[[ -n "$version" ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[[ -n "$out" ]] || out="doorbell-agent-$version-$target.dbu"

tmp=$(mktemp "${TMPDIR:-/tmp}/doorbell-release.XXXXXX.zst")
trap 'rm -f "$tmp"' EXIT
zstd -19 -q -f -c "$binary" >"$tmp"
cargo run --quiet --bin doorbell-release -- sign --key "$key" --version "$version" --target "$target" \
    --binary "$binary" --zstd "$tmp" --out "$out"
