#!/usr/bin/env bash
# Smoke test of the compose demo: build, up, one full handshake + teardown
# through the proxy (asserted from the JSON logs), one fault injected through
# the control API and its effect seen, down — and nothing left behind.
#
#   BASE_IMAGE=local/python-base tests/compose/smoke.sh
#
# Skips (exit 0, and says so) when no Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! docker info >/dev/null 2>&1; then
  echo "compose smoke: SKIPPED — no Docker engine answers (docker info failed)"
  exit 0
fi
export COMPOSE_BAKE=false
if [ -z "${BASE_IMAGE:-}" ]; then
  # the Dockerfile's default, else a local base (see README), else try to pull
  if docker image inspect python:3.12-slim >/dev/null 2>&1; then
    BASE_IMAGE=python:3.12-slim
  elif docker image inspect local/python-base >/dev/null 2>&1; then
    BASE_IMAGE=local/python-base
  elif docker pull -q python:3.12-slim >/dev/null 2>&1; then
    BASE_IMAGE=python:3.12-slim
  else
    echo "compose smoke: SKIPPED — no base image: python:3.12-slim cannot be pulled and"
    echo "  local/python-base does not exist (set BASE_IMAGE to an image with python3 and venv)"
    exit 0
  fi
fi
export BASE_IMAGE
echo "compose smoke: base image $BASE_IMAGE"
project=tcplabsmoke$$
compose=(docker compose -p "$project")
logs=$(mktemp)
cleanup() {
  "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  rm -f "$logs"
}
trap cleanup EXIT

"${compose[@]}" build --quiet
"${compose[@]}" up -d

# wait_for NAME PYTHON-CONDITION [SECONDS]: poll the JSON logs of all services
# until the condition over `events` (a list of dicts) holds
wait_for() {
  local what=$1 condition=$2 limit=${3:-90}
  local deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    "${compose[@]}" logs --no-color --no-log-prefix >"$logs" 2>/dev/null || true
    if python3 - "$logs" "$condition" <<'PY'
import json, sys
events = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        value = json.loads(line)
    except ValueError:
        continue
    if isinstance(value, dict) and "event" in value:
        events.append(value)
def states(component):
    return {e.get("new") for e in events if e.get("component") == component and e.get("event") == "tcp_state"}
def segments(**want):
    return [e for e in events if e.get("event") == "segment" and all(
        (v in e.get("tags", [])) if k == "tag" else e.get(k) == v for k, v in want.items())]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
    then
      echo "compose smoke: $what"
      return 0
    fi
    sleep 1
  done
  echo "compose smoke: FAILED waiting for: $what" >&2
  tail -40 "$logs" >&2
  return 1
}

wait_for "client ESTABLISHED and TIME_WAIT" \
  '{"ESTABLISHED", "TIME_WAIT"} <= states("client")'
wait_for "server CLOSE_WAIT and LAST_ACK" \
  '{"CLOSE_WAIT", "LAST_ACK"} <= states("server")'
wait_for "proxy forwarded SYN, SYN-ACK and FIN" \
  'segments(tag="syn", verdict="pass") and segments(tag="syn-ack", verdict="pass") and segments(tag="fin", verdict="pass")'

# the instructor's workflow: look, then break something live
sockets=$("${compose[@]}" exec -T server ss -tan)
echo "$sockets"
grep -q ":7007" <<<"$sockets"
added=$("${compose[@]}" exec -T proxy tcplab proxy add --drop server:syn-ack@1)
grep -q "drop-server:syn-ack@1" <<<"$added"
wait_for "the added rule dropped a SYN-ACK, and the server sent it again" \
  'segments(tag="syn-ack", verdict="drop", rule="drop-server:syn-ack@1") and any("retransmit" in e["tags"] for e in segments(tag="syn-ack", verdict="pass"))' 120
rules=$("${compose[@]}" exec -T proxy tcplab proxy rules)
grep -q "fired" <<<"$rules"

"${compose[@]}" down -v --remove-orphans --timeout 10
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
networks=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
if [ -n "$left$networks$volumes" ]; then
  echo "compose smoke: FAILED — left behind: $left $networks $volumes" >&2
  exit 1
fi
echo "compose smoke: passed"
