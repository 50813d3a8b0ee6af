#!/usr/bin/env bash
# The testbed on Docker Swarm (deploy/stack.yml; docs/testbed.md, "From one host to many"). On a manager node:
#   bash deploy/swarm.sh certs DIR          # a development CA and every identity in DIR (the image's `certs init`)
#   bash deploy/swarm.sh secrets DIR        # each certificate and key of DIR as a Docker secret tandem-NAME
#   bash deploy/swarm.sh up                 # label this node for edges and devices if no node is, then deploy
#   bash deploy/swarm.sh admin ARGS...      # `tandem ARGS` as the admin: a one-shot task holding the admin key
#   bash deploy/swarm.sh down               # remove the stack, then its secrets
# The stack is named $TANDEM_STACK (default tandem). Keep DIR (it holds the CA key) off the swarm's nodes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stack=${TANDEM_STACK:-tandem}
image=${TANDEM_IMAGE:-tandem:latest}
identities=(ca edge-0 edge-1 health linkemu controller device-0 device-1 device-2 device-3 admin)
uid=10001  # the image's user (deploy/Dockerfile)

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

certs() {
  local dir=${1:?certs DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  docker run --rm --user "$(id -u):$(id -g)" --entrypoint tandem -v "$dir:/out" "$image" certs init /out --edges 2 \
    --devices 4
}

secrets() {
  local dir=${1:?secrets DIR} name file
  for name in "${identities[@]}"; do
    for file in "$dir/$name.pem" "$dir/$name.key"; do
      [ "$name" = ca ] && [ "${file##*.}" = key ] && continue  # the CA key never becomes a secret
      [ -f "$file" ] || { echo "error: $file is missing (bash deploy/swarm.sh certs $dir)" >&2; exit 2; }
      docker secret rm "tandem-$(basename "$file")" >/dev/null 2>&1 || true
      docker secret create "tandem-$(basename "$file")" "$file" >/dev/null
    done
  done
  echo "secrets: $(docker secret ls --filter name=tandem- --format '{{.Name}}' | tr '\n' ' ')"
}

up() {
  if [ -z "$(docker node ls --filter node.label=tandem.edge=true -q)" ]; then
    echo "no node is labelled tandem.edge / tandem.devices: labelling this one for both"
    docker node update --label-add tandem.edge=true --label-add tandem.devices=true \
      "$(docker info --format "{{.Swarm.NodeID}}")" >/dev/null
  fi
  docker stack deploy -c "$repo/deploy/stack.yml" "$stack"
}

# admin ARGS...: `tandem ARGS --controller controller:50070` as the admin, in a task on the stack's network.
admin() {
  local name="$stack-admin-$$" state=""
  docker service create --detach --quiet --name "$name" --network "${stack}_tandem" --restart-condition none \
    --env TANDEM_TLS_DIR=/run/secrets \
    --secret "source=tandem-ca.pem,target=ca.pem,uid=$uid,gid=$uid,mode=0444" \
    --secret "source=tandem-admin.pem,target=admin.pem,uid=$uid,gid=$uid,mode=0444" \
    --secret "source=tandem-admin.key,target=admin.key,uid=$uid,gid=$uid,mode=0400" \
    "$image" "$@" --controller controller:50070 >/dev/null
  for _ in $(seq 300); do
    state=$(docker service ps "$name" --format '{{.CurrentState}}' | head -1)
    case "$state" in Complete*|Failed*|Rejected*|Shutdown*) break ;; esac
    sleep 1
  done
  docker service logs --raw "$name" 2>&1
  docker service rm "$name" >/dev/null
  case "$state" in Complete*) ;; *) echo "error: the admin task ended $state" >&2; exit 1 ;; esac
}

down() {
  docker stack rm "$stack" >/dev/null || true
  # The stack's tasks and network go asynchronously; secrets in use cannot be removed before.
  for _ in $(seq 120); do
    [ -z "$(docker ps -q --filter "label=com.docker.stack.namespace=$stack")" ] \
      && [ -z "$(docker network ls -q --filter "name=${stack}_tandem")" ] && break
    sleep 1
  done
  docker secret ls --filter name=tandem- -q | xargs -r docker secret rm >/dev/null
  echo "stack $stack removed"
}

command=${1:-}
shift || true
case "$command" in
  certs|secrets|up|admin|down) "$command" "$@" ;;
  *) usage ;;
esac
