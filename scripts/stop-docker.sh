#!/usr/bin/env bash
# Stops the dockerd that scripts/setup-docker.sh started (its pid file), and nothing else.
set -euo pipefail
pidfile=/tmp/tandem-dockerd.pid
if [ ! -f "$pidfile" ]; then
  echo "no $pidfile: scripts/setup-docker.sh started no dockerd"
  exit 0
fi
pid=$(cat "$pidfile")
# The pid may have been reused after a reboot or a crash: only signal it while it is still a dockerd.
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
  echo "dockerd $pid is no longer running"
  rm -f "$pidfile"
  exit 0
fi
echo "stopping dockerd $pid..."
kill -TERM "$pid"
# dockerd stops its containers first (10 s grace each by default).
for _ in $(seq 60); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pidfile"
    echo "stopped"
    exit 0
  fi
  sleep 1
done
echo "error: dockerd $pid still runs 60 s after SIGTERM; see /tmp/tandem-dockerd.log" >&2
exit 1
