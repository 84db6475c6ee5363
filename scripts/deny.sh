#!/usr/bin/env bash
# The supply-chain check, offline: cargo-deny (licences, bans, sources, advisories) against
# deny.toml, with the RustSec advisory database of supply-chain/advisory-db.tar.gz (a dated
# snapshot: advisories published after it are not in it). Installs cargo-deny (pinned) into
# the build cache on first use (about 3 min). CI runs it (scripts/test.sh).
#
#   scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
snapshot=supply-chain/advisory-db.tar.gz
# The snapshot's date: RustSec advisory-db at commit bf5c0d24 (supply-chain/README.md).
snapshot_date=2026-08-21T00:00:00Z
if [[ "$(id -u)" == 0 ]]; then cache=/var/cache/doorbell-agent; else cache="${XDG_CACHE_HOME:-$HOME/.cache}/doorbell-agent"; fi

deny="$cache/tools/cargo-deny-$version/bin/cargo-deny"
if [[ ! -x "$deny" ]]; then
    echo "installing cargo-deny $version into $cache/tools (once, about 3 min)"
    cargo install --locked --quiet cargo-deny --version "$version" --root "$cache/tools/cargo-deny-$version"
fi

# cargo-deny opens each database as a git checkout, in a directory named after its URL;
# the checkout's commit carries the snapshot's date.
dbs="$cache/advisory-dbs"
db="$dbs/advisory-db-3157b0e258782691"
stamp=$(sha256sum "$snapshot" | cut -d' ' -f1)
if [[ "$(cat "$dbs/.snapshot" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$db"
    mkdir -p "$db"
    tar xzf "$snapshot" -C "$db"
    git -C "$db" init -q
    git -C "$db" add -A
    GIT_COMMITTER_DATE=$snapshot_date git -C "$db" -c user.name=doorbell -c user.email=ci@localhost \
        commit -q --date "$snapshot_date" -m "RustSec advisory-db snapshot ($snapshot)"
    echo "$stamp" >"$dbs/.snapshot"
fi

# cargo-deny reads `cargo metadata --frozen`, which needs the crates of every platform in the
# lock file (a build downloads only this host's): fetch them first, from the registry.
cargo fetch --locked --quiet
DOORBELL_ADVISORY_DBS="$dbs" "$deny" --frozen check
echo "supply chain ok: licences, bans, sources; advisories as of ${snapshot_date%%T*} (later ones are not in the snapshot)"
