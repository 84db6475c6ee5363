# shellcheck shell=bash
# Debian's Rust toolchains, for building without rustup's toolchain and without Docker.
# Sourced (not run) by scripts/cross-build.sh and scripts/msrv.sh; nothing runs when sourced.
#
# Two toolchains, both Debian bookworm's, neither touching rustup's:
#   system  rustc-web + cargo-web from apt (bookworm-security: 1.96 today) in /usr/bin, with
#           the arm64 standard library as the dpkg package libstd-rust-web-dev:arm64.
#   msrv    rustc-web + cargo-web 1.85 from bookworm main (= Cargo.toml's rust-version),
#           unpacked into the build cache with the host and armhf standard libraries.
#           Debian serves armhf's std only for this version here: bookworm-security's armhf
#           index did not match its signed Release (apt refuses it), and with armhf added as
#           a dpkg architecture apt then stops refreshing bookworm-security for every
#           architecture. So armhf is never added to dpkg; its std is fetched by a private
#           apt instance (same signed archive) into the cache.
# `dr_cargo` runs cargo with explicit RUSTC/RUSTDOC paths, rustup's variables unset, and a
# target directory per toolchain (system, msrv) in the build cache (outside the repository, so it survives
# between CI runs on the same machine).
#
# Environment: DOORBELL_BUILD_CACHE (default /var/cache/doorbell-agent/build as root, else
# ~/.cache/doorbell-agent-build).

# The Debian build of the MSRV toolchain (bookworm main). Its upstream version must be
# Cargo.toml's rust-version; dr_use_msrv checks that.
DR_MSRV_DEB_VERSION="1.85.0+dfsg3-1~deb12u3"

if [[ -n "${DOORBELL_BUILD_CACHE:-}" ]]; then
    DR_CACHE="$DOORBELL_BUILD_CACHE"
elif [[ "$(id -u)" == 0 ]]; then
    DR_CACHE=/var/cache/doorbell-agent/build
else
    DR_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/doorbell-agent-build"
fi
DR_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

dr_log() { printf '[debian-rust] %s\n' "$*" >&2; }
dr_die() {
    printf '[debian-rust] error: %s\n' "$*" >&2
    exit 1
}

dr_as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

# Runs apt-get as root, serialized with the other scripts of this repository that install
# packages (scripts/testbed.sh takes the same lock); apt's own lock would fail the loser.
dr_apt_get() {
    dr_as_root mkdir -p /var/lock
    dr_as_root env DEBIAN_FRONTEND=noninteractive flock -w 600 /var/lock/doorbell-testbed-apt.lock apt-get "$@"
}

# True when the package is installed, or, for a virtual one (libc-dev), when an installed
# package provides it. (Outputs are captured first: grep -q's early exit fails a pipeline.)
dr_installed() {
    local status provides
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || true
    [[ "$status" == *"ok installed"* ]] && return 0
    provides=$(dpkg-query -W -f='${Status}|${Provides}\n' 2>/dev/null | sed -n 's/^[^|]*ok installed|//p')
    provides=",${provides//$'\n'/,},"
    [[ "$provides" =~ [\ ,]"$1"[\ ,] ]]
}

# Installs the packages (NAME, NAME:ARCH or NAME=VERSION) that are not installed yet.
dr_install() {
    local missing=() p
    for p in "$@"; do dr_installed "${p%%=*}" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    dr_log "installing ${missing[*]}"
    local log
    log=$(mktemp)
    # A fresh machine has no package lists yet, a long-lived one may have stale ones.
    if ! dr_apt_get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        dr_apt_get update -qq >>"$log" 2>&1 || true
        dr_apt_get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || {
            cat "$log" >&2
            rm -f "$log"
            dr_die "apt-get install ${missing[*]} failed"
        }
    fi
    rm -f "$log"
}

# Adds a foreign dpkg architecture (and refreshes the package lists) when it is missing.
dr_add_arch() {
    dpkg --print-foreign-architectures | grep -qx "$1" && return 0
    dr_log "adding dpkg architecture $1"
    dr_as_root dpkg --add-architecture "$1"
    dr_apt_get update -qq >/dev/null || dr_die "apt-get update failed after adding architecture $1"
}

# Selects the system toolchain with the standard library for TARGET (aarch64 only: the
# armhf std is not installable through dpkg here, see the top of this file).
dr_use_system() {
    local target="$1" deb_arch
    case "$target" in
        aarch64-unknown-linux-gnu) deb_arch=arm64 ;;
        *) dr_die "the system toolchain has no standard library for $target" ;;
    esac
    dr_add_arch "$deb_arch"
    dr_install rustc-web cargo-web "libstd-rust-web-dev:$deb_arch"
    # The target's std must be the compiler's exact build; an upgrade of rustc-web alone
    # (unattended-upgrades, apt upgrade of amd64 packages) leaves the foreign one behind.
    local rustc_v std_v
    rustc_v=$(dpkg-query -W -f='${Version}' rustc-web)
    std_v=$(dpkg-query -W -f='${Version}' "libstd-rust-web-dev:$deb_arch")
    if [[ "$rustc_v" != "$std_v" ]]; then
        dr_log "libstd-rust-web-dev:$deb_arch $std_v does not match rustc-web $rustc_v; installing the matching one"
        dr_apt_get install -y -qq --no-install-recommends "libstd-rust-web-dev:$deb_arch=$rustc_v" >/dev/null ||
            dr_die "cannot install libstd-rust-web-dev:$deb_arch=$rustc_v"
    fi
    DR_BIN=/usr/bin
    DR_LIB=""
    DR_ID=system
    DR_VERSION=$("$DR_BIN/rustc" --version | awk '{print $2}')
}

# Selects the MSRV toolchain, unpacking it into the cache on first use.
dr_use_msrv() {
    local want dir
    want=$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' "$DR_REPO/Cargo.toml" | head -n1)
    [[ -n "$want" ]] || dr_die "Cargo.toml has no rust-version"
    case "$DR_MSRV_DEB_VERSION" in
        "$want".* | "$want"+*) ;;
        *) dr_die "Cargo.toml says rust-version $want but scripts/debian-rust.sh pins Debian's $DR_MSRV_DEB_VERSION; update DR_MSRV_DEB_VERSION to a Debian build of $want" ;;
    esac
    dir="$DR_CACHE/toolchains/debian-$DR_MSRV_DEB_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        # One unpacker at a time (a developer's run beside CI's); the loser finds it done.
        local lock
        mkdir -p "$DR_CACHE/toolchains"
        exec {lock}>"$DR_CACHE/toolchains/.lock"
        flock -w 900 "$lock" || dr_die "timed out waiting for $DR_CACHE/toolchains/.lock"
        [[ -f "$dir/.complete" ]] || dr__unpack_msrv "$dir"
        exec {lock}>&-
    fi
    DR_BIN="$dir/usr/bin"
    DR_LIB="$dir/usr/lib/x86_64-linux-gnu"
    DR_VERSION=$(LD_LIBRARY_PATH="$DR_LIB" "$DR_BIN/rustc" --version | awk '{print $2}')
    [[ "$DR_VERSION" == "$want" || "$DR_VERSION" == "$want".* ]] || dr_die "$DR_BIN/rustc is $DR_VERSION, not the MSRV $want"
    DR_ID=msrv
}

dr__unpack_msrv() {
    local tree="$1" apt_dir="$DR_CACHE/apt" tmp deb mirror
    local pkgs=(rustc-web cargo-web "libstd-rust-web-${DR_MSRV_DEB_VERSION%.*}" libstd-rust-web-dev libstd-rust-web-dev:armhf)
    dr_log "unpacking Debian's Rust $DR_MSRV_DEB_VERSION (host + armhf std) into $tree"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
    # A private apt instance: bookworm main only, amd64 + armhf, its own lists and an empty
    # dpkg status, so nothing on the machine changes. Signatures are checked as usual.
    # The mirror the systemd testbed uses too (TESTBED_MIRROR, else the host's).
    # shellcheck source=scripts/testbed.sh
    mirror=$(source "$DR_REPO/scripts/testbed.sh" && tb__mirror)
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" >"$apt_dir/sources.list"
    : >"$apt_dir/status"
    local opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
        -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
        -o "Dir::Cache::Archives=$apt_dir/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "APT::Architectures::=armhf"
        -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq || dr_die "apt-get update of the private bookworm index failed"
    rm -f "$apt_dir/debs/"*.deb
    local specs=()
    for deb in "${pkgs[@]}"; do specs+=("$deb=$DR_MSRV_DEB_VERSION"); done
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" download "${specs[@]}" >/dev/null) ||
        dr_die "cannot download ${specs[*]} from $mirror bookworm main (did a point release replace Rust $DR_MSRV_DEB_VERSION?)"
    tmp="$tree.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for deb in "$apt_dir/debs/"*.deb; do dpkg-deb -x "$deb" "$tmp"; done
    # The shared libraries these packages need from the system (LLVM, libgit2, ...), taken
    # from their Depends (first alternative) minus the packages unpacked above.
    local deps
    deps=$(for deb in "$apt_dir/debs/"*_amd64.deb; do dpkg-deb -f "$deb" Depends; done |
        tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/ //g' | grep -v -e '^$' -e '^rustc-web$' -e '^cargo-web$' -e '^libstd-rust-web' | sort -u)
    # shellcheck disable=SC2086 # one package name per word
    dr_install $deps
    rm -rf "$tree" "$apt_dir/debs"
    mv "$tmp" "$tree"
    touch "$tree/.complete"
}

# Runs cargo of the selected toolchain: `dr_cargo ARGS...`. Build results go to $DR_TARGET_DIR.
dr_cargo() {
    DR_TARGET_DIR="$DR_CACHE/target/$DR_ID"
    mkdir -p "$DR_TARGET_DIR"
    # rustup's proxies and variables must not leak in (they would pick rustup's rustc or std).
    env -u RUSTUP_TOOLCHAIN -u RUSTUP_HOME -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER \
        -u CARGO_BUILD_RUSTC -u CARGO_BUILD_RUSTC_WRAPPER -u CARGO_BUILD_TARGET_DIR -u RUSTFLAGS \
        LD_LIBRARY_PATH="$DR_LIB" RUSTC="$DR_BIN/rustc" RUSTDOC="$DR_BIN/rustdoc" \
        CARGO_TARGET_DIR="$DR_TARGET_DIR" "$DR_BIN/cargo" "$@"
}

# Keeps the build cache bounded: one target directory per toolchain kind (cargo keeps the
# artifacts of each compiler version apart, so an upgraded rustc-web adds a set), started
# afresh once they pass DR_CACHE_MAX_GIB (default 4).
dr_prune() {
    local size_gib max="${DR_CACHE_MAX_GIB:-4}"
    [[ -d "$DR_CACHE/target" ]] || return 0
    size_gib=$(du -s --block-size=1G "$DR_CACHE/target" | cut -f1)
    if ((${size_gib:-0} > max)); then
        dr_log "$DR_CACHE/target is ${size_gib} GiB (> $max); starting it afresh"
        rm -rf "$DR_CACHE/target"
    fi
}
