#!/bin/sh
# The compose testbed's credentials, made by the one-shot `certs` service of docker-compose.yml.
#
# The development CA and every identity's certificate and key stay in /ca, a volume no other service mounts: the CA
# key never enters a running service. Each service's own volume, mounted at /tls (read-only) by that service alone,
# gets the CA certificate and that service's identities only, owned by the image's user (uid 10001): keys 0600,
# certificates 0644, the folder 0500. This script runs as root because only root can hand the volumes to that user;
# every long-running service runs as the user.
set -eu
user=tandem

if [ ! -f /ca/ca.pem ]; then
  tandem certs init /ca --edges 2 --devices 4 >/dev/null
fi

# give SERVICE NAME...: /out/SERVICE holds the CA certificate and NAME's certificate and key, nothing else.
give() {
  out=/out/$1
  shift
  find "$out" -mindepth 1 -delete  # what an earlier layout left there
  install -o "$user" -g "$user" -m 0644 /ca/ca.pem "$out/ca.pem"
  for name in "$@"; do
    install -o "$user" -g "$user" -m 0644 "/ca/$name.pem" "$out/$name.pem"
    install -o "$user" -g "$user" -m 0600 "/ca/$name.key" "$out/$name.key"
  done
  chown "$user:$user" "$out"
  chmod 0500 "$out"
}

# Edges and the link emulator only serve TLS: their health checks call as `health`, a client identity granted
# nothing but Health/Check. The controller also calls (edges, link emulator), so it checks itself as itself.
give edge0 edge-0 health
give edge1 edge-1 health
give linkemu linkemu health
give controller controller
give devices device-0 device-1 device-2 device-3  # users 0-2 run the workload, user 3 is `tandem generate`'s
give admin admin
echo "credentials handed out: edge0 edge1 linkemu controller devices admin"
