#!/usr/bin/env bash
# Builds the base image tandem-base:bookworm from Debian packages (debootstrap + docker import), because no image
# can be pulled from a registry here; skipped when the image exists (`docker rmi tandem-base:bookworm` to rebuild).
# Run as root (debootstrap). Mirror: the host's bookworm mirror, or $TANDEM_DEBIAN_MIRROR.
set -euo pipefail
image=tandem-base:bookworm

docker info >/dev/null 2>&1 || { echo "error: docker is not reachable: run scripts/setup-docker.sh" >&2; exit 1; }
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base: $image already exists, not rebuilding"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing: run scripts/setup-docker.sh" >&2; exit 1; }

# The URIs of the host's apt sources for the suite bookworm, in one-line (sources.list) or deb822 (.sources) form.
# (cat and a test per file, because Debian's awk, mawk, stops at the first file it cannot open.)
host_mirrors() {
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
    | awk '$1 == "deb" { sub(/\[[^]]*\]/, ""); if ($3 == "bookworm") print $2 }'
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk 'function flush() { if (uri != "" && suites ~ /(^| )bookworm( |$)/) print uri; uri = suites = "" }
         /^[[:space:]]*$/ { flush() }
         /^URIs:/ { uri = $2 }
         /^Suites:/ { suites = $0 }
         END { flush() }' "$file"
  done
}
mirrors=$(host_mirrors)
mirror=${TANDEM_DEBIAN_MIRROR:-${mirrors%%$'\n'*}}
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /var/tmp/tandem-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
fail() {
  echo "error: $1" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
}

echo "base: debootstrap --variant=minbase bookworm from $mirror (a few minutes)..."
start=$SECONDS
# ca-certificates: pip in the images downloads from PyPI over https.
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null \
  || fail "debootstrap from $mirror failed (set TANDEM_DEBIAN_MIRROR to another mirror?)"
echo "base: debootstrap took $((SECONDS - start)) s"

# What a container image needs beyond a chroot:
#  * policy-rc.d exit 101: package scripts must not try to start services during `docker build`;
#  * the host's locally added CAs (e.g. of a TLS-inspecting egress proxy), so pip and apt trust what the host trusts;
#  * no apt caches in the image.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates failed in the new root"
fi
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs/debootstrap"

echo "base: importing into docker as $image..."
start=$SECONDS
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null || fail "docker import failed (is dockerd running?)"
echo "base: import took $((SECONDS - start)) s; $image is $(docker image inspect -f '{{.Size}}' "$image" \
  | awk '{printf "%.0f MB", $1 / 1e6}')"
