#!/usr/bin/env bash
# Docker for the compose testbed (deploy/README.md), as root on Debian 12 without systemd. Idempotent.
#   * installs Debian's docker.io (dockerd), docker-compose (1.29.2), debootstrap (deploy/build-base.sh builds the
#     base image from Debian packages: no registry image can be pulled here) and prometheus (only the binary
#     /usr/bin/prometheus is used; the package's own service is never started);
#   * starts dockerd in the background unless `docker info` already works; scripts/stop-docker.sh stops it.
set -euo pipefail
log=/tmp/tandem-dockerd.log
pidfile=/tmp/tandem-dockerd.pid
packages=(docker.io docker-compose debootstrap prometheus)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}..."
  # Their maintainer scripts would start dockerd and prometheus as services; policy-rc.d exit 101 forbids it
  # (there is no systemd, and dockerd is started below with our own log and pid file). Kept if one exists.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: they would add needrestart (interactive), prometheus-node-exporter (another service), etc.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for binary in /usr/sbin/dockerd /usr/bin/prometheus /usr/sbin/debootstrap; do
  [ -x "$binary" ] || { echo "error: $binary is missing after the install" >&2; exit 1; }
done

if docker info >/dev/null 2>&1; then
  echo "dockerd is already running"
  exit 0
fi
echo "starting dockerd (log: $log)..."
# setsid: its own session, so a Ctrl-C in the shell that ran this script does not stop it.
setsid /usr/sbin/dockerd </dev/null >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd is running (pid $(cat "$pidfile"); stop it with scripts/stop-docker.sh)"
    exit 0
  fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || break  # it exited: no use waiting
  sleep 1
done
echo "error: dockerd did not come up within 60 s; the end of $log:" >&2
tail -n 20 "$log" >&2
exit 1
