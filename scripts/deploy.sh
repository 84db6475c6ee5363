#!/usr/bin/env bash
# deploy.sh — puts doorbell-agent on many devices over ssh, then prints one line per device.
#
#   scripts/deploy.sh [OPTIONS] HOST...          HOST: anything ssh takes ([user@]host, an alias)
#
#   --key FILE         the release key: upgrades need it (a signed artifact); fresh installs
#                      then get its public half as [update] public_key (FILE with .pub)
#   --public-key KEY   the update key for fresh installs (default: from --key's .pub file)
#   --config FILE      the configuration for fresh installs (default: the commented default);
#                      a device's existing config is never replaced
#   --version V        the version the artifact claims (default: Cargo.toml's)
#   --bin-dir T=DIR    take the binaries for target T from DIR instead of building them
#   --no-build         take target/device/T as it is (default: scripts/cross-build.sh T first,
#                      which is incremental: seconds when nothing changed)
#   --force            upgrade even to the same or a lower version (update apply --force)
#   --jobs N           devices in parallel (default 4)
#   --ssh-config FILE  ssh -F FILE;  --ssh-option OPT: ssh -o OPT (repeatable)
#   --log-dir DIR      keep each device's log there (default: a temp dir, kept on failure)
#
# Per device: `install.sh --detect` over ssh (dpkg architecture + CPU model -> target, glibc
# >= 2.36, systemd, what is installed), then
#   - nothing installed: the bundle (scripts/make-bundle.sh) is copied and install.sh runs it
#   - installed: only the signed, zstd-compressed artifact is copied, and
#     `doorbell-agent update apply` puts it on trial; a bad version rolls back by itself and the
#     device reports rolled_back. A device with a trial running is left alone.
# A non-root user needs passwordless sudo on the device. Exit 0 when every device ended
# installed, updated or up to date; 1 otherwise; 2 usage.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

key="" public_key="" config="" version="" build=1 force=0 jobs=4 log_dir="" hosts=()
declare -A bin_dirs=()
ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4)
usage() { sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d' >&2; exit 2; }
while (($#)); do
    case "$1" in
        --key) key=$(readlink -f "$2"); shift ;;
        --public-key) public_key="$2"; shift ;;
        --config) config=$(readlink -f "$2"); shift ;;
        --version) version="$2"; shift ;;
        --bin-dir) [[ "$2" == *=* ]] || usage; bin_dirs[${2%%=*}]=$(readlink -f "${2#*=}"); shift ;;
        --no-build) build=0 ;;
        --force) force=1 ;;
        --jobs) jobs="$2"; shift ;;
        --ssh-config) ssh_opts+=(-F "$(readlink -f "$2")"); shift ;;
        --ssh-option) ssh_opts+=(-o "$2"); shift ;;
        --log-dir) log_dir="$2"; shift ;;
        -h | --help) usage ;;
        -*) echo "deploy.sh: unknown option $1" >&2; usage ;;
        *) hosts+=("$1") ;;
    esac
    shift
done
((${#hosts[@]})) || { echo "deploy.sh: no HOST given" >&2; usage; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "deploy.sh: --jobs needs a number" >&2; exit 2; }
[[ -z "$config" || -f "$config" ]] || { echo "deploy.sh: no config file $config" >&2; exit 2; }
if [[ -n "$key" && -z "$public_key" ]]; then
    [[ -f "${key%.key}.pub" ]] || { echo "deploy.sh: no ${key%.key}.pub beside $key; pass --public-key" >&2; exit 2; }
    public_key=$(cat "${key%.key}.pub")
fi
[[ -n "$version" ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)
keep_log=1
[[ -n "$log_dir" ]] || { log_dir=$(mktemp -d "${TMPDIR:-/tmp}/doorbell-deploy.XXXXXX"); keep_log=0; }
mkdir -p "$log_dir"
log_dir=$(readlink -f "$log_dir")

# A host's file names in the log dir (a host may be user@host:port-ish; keep it a file name).
hid() { printf '%s' "$1" | tr -c 'A-Za-z0-9._@-' '_'; }
# A word quoted for a POSIX shell.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
# Runs the shell command string CMD on HOST as root (through sudo -n when logged in as another
# user); stdin is passed through.
remote() {
    local host="$1" cmd
    cmd=$(q "$2")
    # shellcheck disable=SC2029  # expanded here on purpose: the command is built locally
    ssh "${ssh_opts[@]}" "$host" "if [ \"\$(id -u)\" = 0 ]; then sh -c $cmd; else sudo -n sh -c $cmd; fi"
}
fact() { sed -n "s/^$1=//p" "$2" | head -n1; }

# --- 1. what each device is and has (in parallel) ---------------------------------------------
echo "==> detecting ${#hosts[@]} device(s)"
for h in "${hosts[@]}"; do
    (
        f="$log_dir/$(hid "$h")"
        if remote "$h" 'bash -s -- --detect' <"$REPO/scripts/install.sh" >"$f.facts" 2>"$f.log"; then
            echo ok >"$f.reach"
        else
            echo "unreachable: $(tail -n1 "$f.log")" >"$f.reach"
        fi
    ) &
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
done
wait

# --- 2. binaries, bundle and artifact per target needed ---------------------------------------
declare -A ready=()
prepare() {
    local t="$1" dir
    [[ -z "${ready[$t]:-}" ]] || return 0
    ready[$t]=failed
    dir="${bin_dirs[$t]:-}"
    if [[ -z "$dir" ]]; then
        case "$t" in
            x86_64-unknown-linux-gnu)
                ((build == 0)) || (cd "$REPO" && cargo build --locked --release --bin doorbell-agent --bin doorbell-slotctl) >>"$log_dir/build-$t.log" 2>&1 || return 1
                dir="$REPO/target/release" ;;
            arm-unknown-linux-gnueabihf)
                # No Debian toolchain for ARMv6 (scripts/cross-build.sh says why): cross's build.
                dir="$REPO/target/$t/release" ;;
            *)
                if ((build)); then
                    echo "==> building for $t (scripts/cross-build.sh; log $log_dir/build-$t.log)"
                    "$REPO/scripts/cross-build.sh" "$t" >>"$log_dir/build-$t.log" 2>&1 || return 1
                fi
                dir="$REPO/target/device/$t" ;;
        esac
    fi
    [[ -f "$dir/doorbell-agent" ]] || { echo "no $dir/doorbell-agent" >>"$log_dir/build-$t.log"; return 1; }
    "$REPO/scripts/make-bundle.sh" --target "$t" --bin-dir "$dir" --version "$version" ${key:+--key "$key"} \
        --out "$log_dir/bundle-$t" >>"$log_dir/build-$t.log" 2>&1 || return 1
    [[ -z "$config" ]] || cp "$config" "$log_dir/bundle-$t/site.toml"
    ready[$t]=ok
}
for h in "${hosts[@]}"; do
    f="$log_dir/$(hid "$h")"
    [[ "$(cat "$f.reach")" == ok ]] || continue
    t=$(fact target "$f.facts")
    [[ "$t" == unsupported-* ]] && continue
    prepare "$t" || echo "==> no binaries for $t: see $log_dir/build-$t.log"
done

# --- 3. install or upgrade (in parallel) ------------------------------------------------------
# Writes "BEFORE<TAB>RESULT" to HOST.result; the log gets everything the device printed.
deploy_host() {
    local h="$1" f t installed trial out rc bundle tmp
    f="$log_dir/$(hid "$h")"
    if [[ "$(cat "$f.reach")" != ok ]]; then printf -- '-\t%s\n' "$(cat "$f.reach")" >"$f.result"; return; fi
    t=$(fact target "$f.facts"); installed=$(fact installed "$f.facts"); trial=$(fact trial "$f.facts")
    result() { printf '%s\t%s\n' "$installed" "$1" >"$f.result"; }
    if [[ "$t" == unsupported-* ]]; then result "unsupported: dpkg architecture ${t#unsupported-}"; return; fi
    if [[ "$(fact glibc_ok "$f.facts")" != yes ]]; then result "unsupported: glibc $(fact glibc "$f.facts") < 2.36"; return; fi
    if [[ "$(fact systemd "$f.facts")" != yes ]]; then result "unsupported: systemd is not running"; return; fi
    if [[ "${ready[$t]:-}" != ok ]]; then result "failed: no build for $t ($log_dir/build-$t.log)"; return; fi
    bundle="$log_dir/bundle-$t"
    if [[ "$installed" == none ]]; then
        # Fresh: the bundle to a temp dir on the device, install.sh from there.
        tmp="/tmp/doorbell-agent-bundle.$$"
        local args=""
        [[ -z "$public_key" ]] || args+=" --public-key $(q "$public_key")"
        [[ -z "$config" ]] || args+=" --config $tmp/site.toml"
        out=$(tar -C "$bundle" -cz . | remote "$h" "rm -rf $tmp && mkdir -m 700 $tmp && tar -xz -C $tmp && $tmp/install.sh$args; rc=\$?; rm -rf $tmp; exit \$rc" 2>&1) && rc=0 || rc=$?
        printf '%s\n' "$out" >>"$f.log"
        if ((rc == 0)); then result "installed: $(grep '^doorbell-agent: ' <<<"$out" | tail -n1 | sed 's/^doorbell-agent: //')"
        else result "install failed (exit $rc): $(tail -n1 <<<"$out")"; fi
        return
    fi
    if [[ "$trial" != none ]]; then result "skipped: an update ($trial) is on trial"; return; fi
    if [[ "$installed" == "$version" ]] && ((!force)); then result "up to date"; return; fi
    if [[ ! -f "$bundle/doorbell-agent.dbu" ]]; then result "not updated: upgrades need --key (a signed artifact)"; return; fi
    # Upgrade: only the compressed artifact travels; the device verifies it, slotctl installs it
    # into the inactive slot, the trial commits it or rolls it back by itself.
    tmp="/tmp/doorbell-agent-$version.dbu.$$"
    out=$(remote "$h" "cat >$tmp && chmod 644 $tmp && /opt/doorbell-agent/current/doorbell-agent update apply $([[ $force == 0 ]] || echo --force) $tmp; rc=\$?; rm -f $tmp; exit \$rc" \
        <"$bundle/doorbell-agent.dbu" 2>&1) && rc=0 || rc=$?
    printf '%s\n' "$out" >>"$f.log"
    # The outcome `update apply` prints: "successful: 0.2.0 (from 0.1.0), slot b: ...", or as
    # its error "rolled_back: ...", "update refused (code): reason".
    local last
    last=$(grep -E '^(error: )?(successful|rolled_back|both_slots_bad|refused|manual_rollback):|update refused|no outcome' <<<"$out" | tail -n1 | sed 's/^error: //') || true
    if ((rc == 0)); then result "updated: ${last:-$(tail -n1 <<<"$out")}"
    else result "${last:-update failed (exit $rc): $(tail -n1 <<<"$out")}"; fi
}

echo "==> deploying doorbell-agent $version"
for h in "${hosts[@]}"; do
    (
        t0=$SECONDS
        deploy_host "$h"
        echo $((SECONDS - t0)) >"$log_dir/$(hid "$h").secs"
    ) &
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
done
wait

# --- 4. where every device ended ---------------------------------------------------------------
for h in "${hosts[@]}"; do
    f="$log_dir/$(hid "$h")"
    [[ "$(cat "$f.reach")" == ok ]] || continue
    (remote "$h" 'bash -s -- --detect' <"$REPO/scripts/install.sh" >"$f.after" 2>>"$f.log" || true) &
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
done
wait

ok=0 bad=0
table=$(
    printf 'HOST\tTARGET\tBEFORE\tNOW\tSECONDS\tRESULT\n'
    for h in "${hosts[@]}"; do
        f="$log_dir/$(hid "$h")"
        IFS=$'\t' read -r before res <"$f.result"
        now=-
        if [[ -s "$f.after" ]]; then
            now="$(fact installed "$f.after")"
            [[ "$now" == none ]] || now="$now ($(fact slot "$f.after"), $(fact active "$f.after"))"
        fi
        t=$(fact target "$f.facts")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$h" "${t:--}" "${before:--}" "$now" \
            "$(cat "$f.secs" 2>/dev/null || echo -)" "$res"
    done
)
# Columns padded to their widest cell; the result (last) as it is.
awk -F'\t' '{ for (i = 1; i < NF; i++) if (length($i) > w[i]) w[i] = length($i); row[NR] = $0 }
    END { for (r = 1; r <= NR; r++) { n = split(row[r], c, "\t"); line = ""
          for (i = 1; i < n; i++) line = line sprintf("%-" w[i] + 2 "s", c[i]); print line c[n] } }' <<<"$table"
for h in "${hosts[@]}"; do
    case "$(cut -f2 "$log_dir/$(hid "$h").result")" in
        installed:* | updated:* | "up to date") ok=$((ok + 1)) ;;
        *) bad=$((bad + 1)) ;;
    esac
done
echo "$ok of ${#hosts[@]} device(s) ok; logs: $log_dir"
if ((bad == 0 && keep_log == 0)); then rm -rf "$log_dir"; fi
((bad == 0))
