#!/usr/bin/env bash
# Debian's packages the tests run for real: prometheus (prometheus, promtool),
# prometheus-alertmanager (alertmanager, amtool) and chromium (headless, for the HTML report).
#
# Where it runs as root with apt-get (CI, the project's machines), it installs the missing ones,
# quietly, and does nothing when all are there. Elsewhere it names what is missing and exits 0:
# tests that need a missing binary skip, or fail with PETPARK_REQUIRE_SYSTEM_PACKAGES=1, which
# `make test` sets, so CI never passes without them.
set -euo pipefail

PACKAGES=(prometheus prometheus-alertmanager chromium)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system packages missing: ${missing[*]}; install them as root (apt-get install ${missing[*]})." \
         "Tests that need them skip, or fail under PETPARK_REQUIRE_SYSTEM_PACKAGES=1." >&2
    exit 0
fi

start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# wait for another apt (a parallel session, unattended upgrades) instead of failing on its lock
apt_get=(apt-get -qq -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# the package lists may be stale or absent on a fresh machine: refresh them first
if ! { "${apt_get[@]}" update && "${apt_get[@]}" install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "apt-get could not install ${missing[*]}" >&2
    exit 1
fi
echo "system packages: installed ${missing[*]} in $((SECONDS - start)) s"
