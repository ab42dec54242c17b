#!/usr/bin/env bash
# Smoke test of the compose demo: build, up, the board's URL printed and its
# page served (and refused without the token), one full handshake + teardown
# through the proxy (asserted from the JSON logs), the lab's records reaching
# the board's event stream, one fault injected through the control API and
# its effect seen, down — and nothing left behind.
#
#   BASE_IMAGE=local/python-base tests/compose/smoke.sh
#   BOARD_PORT=8080 tests/compose/smoke.sh     # default: a free local port
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
if ! command -v curl >/dev/null; then
  echo "compose smoke: FAILED — curl is needed to test the board" >&2
  exit 1
fi
if [ -z "${BOARD_PORT:-}" ]; then
  # a port nothing listens on now, so a board already on 8080 does not clash
  BOARD_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export BOARD_PORT
project=tcplabsmoke$$
compose=(docker compose -p "$project")
logs=$(mktemp)
body=$(mktemp)
cleanup() {
  "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  rm -f "$logs" "$body"
}
trap cleanup EXIT

"${compose[@]}" build --quiet
"${compose[@]}" up -d

# the board is on none of the lab's networks
board_id=$("${compose[@]}" ps -aq board)
board_networks=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$board_id")
if [[ $board_networks == *client_side* || $board_networks == *server_side* ]]; then
  echo "compose smoke: FAILED — the board is on a lab network: $board_networks" >&2
  exit 1
fi

# the board prints its URL, with its token, first
url_re='(https?://[^[:space:]]*[?&]token=[A-Za-z0-9._~%-]+)'
board_url=""
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  "${compose[@]}" logs --no-color --no-log-prefix board >"$logs" 2>/dev/null || true
  if [[ $(<"$logs") =~ $url_re ]]; then
    board_url=${BASH_REMATCH[1]}
    break
  fi
  if [ "$(docker inspect -f '{{.State.Running}}' "$board_id")" != true ]; then
    echo "compose smoke: FAILED — the board exited before printing its URL; its log:" >&2
    tail -40 "$logs" >&2
    exit 1
  fi
  sleep 1
done
if [ -z "$board_url" ]; then
  echo "compose smoke: FAILED — the board printed no URL with token= within 60 s; its log:" >&2
  tail -40 "$logs" >&2
  exit 1
fi
token=${board_url##*token=}
token=${token%%&*}
[[ $board_url =~ ^https?://[^/?]+(.*)$ ]]
path_query=${BASH_REMATCH[1]}  # what the board printed after its host:port
[[ $path_query == /* ]] || path_query=/$path_query
board=http://127.0.0.1:$BOARD_PORT
echo "compose smoke: the board printed $board_url (reached as $board$path_query)"

# curl_status URL [CURL-ARGS…]: the HTTP status of a GET, the body in $body
curl_status() {
  local url=$1
  shift
  curl -sS -o "$body" -w '%{http_code}' --max-time 10 "$@" "$url" || true
}
status=""
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do  # the URL can come just before the listener
  status=$(curl_status "$board$path_query")
  [ "$status" = 200 ] && break
  sleep 1
done
if [ "$status" != 200 ] || ! grep -qiE '<html|<!doctype html' "$body"; then
  echo "compose smoke: FAILED — the board's page: HTTP $status, expected 200 and HTML" >&2
  head -c 2000 "$body" >&2
  exit 1
fi
echo "compose smoke: the board's page is served"
status=$(curl_status "$board${path_query%%\?*}")
if [ "$status" != 401 ]; then
  echo "compose smoke: FAILED — the board's page without the token: HTTP $status, expected 401" >&2
  exit 1
fi
status=$(curl_status "$board/api/events")
if [ "$status" != 401 ]; then
  echo "compose smoke: FAILED — /api/events without the token: HTTP $status, expected 401" >&2
  exit 1
fi
echo "compose smoke: the board refuses what has no token (401)"

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

# the lab's records reached the board over the socket on the shared volume:
# its event stream (server-sent events) carries them
seen=""
for _ in 1 2 3 4; do
  # --max-time ends the stream (curl exits 28): what came is in $body
  curl -sS -N --max-time 5 "$board/api/events?token=$token" >"$body" 2>/dev/null || true
  if grep -qE '^data: \{.*"event"' "$body"; then
    seen=yes
    break
  fi
done
if [ -z "$seen" ]; then
  echo "compose smoke: FAILED — /api/events sent no 'data: {…\"event\"…}' line in 4 tries; last:" >&2
  head -c 2000 "$body" >&2
  echo "the board's log:" >&2
  "${compose[@]}" logs --no-color --tail 40 board >&2 || true
  exit 1
fi
echo "compose smoke: the board streams the lab's records"

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

# the same through the board's HTTP API, from the host: a delayed client
# FIN on the next connections, listed by GET /api/rules, then removed
api_added=$(curl -sS --max-time 10 -H "Authorization: Bearer $token" \
  -X POST "$board/api/rules" -d '{"action":"delay","rule":"client:fin=300ms"}')
grep -q '"name":"delay-client:fin"' <<<"$api_added" || {
  echo "compose smoke: FAILED — POST /api/rules answered: $api_added" >&2
  exit 1
}
api_rules=$(curl -sS --max-time 10 -H "Authorization: Bearer $token" "$board/api/rules")
grep -q 'delay-client:fin' <<<"$api_rules"
wait_for "a rule added with POST /api/rules delayed the next client FIN" \
  'segments(tag="fin", rule="delay-client:fin")' 120
bad=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  -X POST "$board/api/rules" -d '{"action":"drop","rule":"synack"}')
[ "$bad" = 422 ] || { echo "compose smoke: FAILED — a bad rule got $bad, not 422" >&2; exit 1; }
removed=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  -X DELETE "$board/api/rules/delay-client:fin")
[ "$removed" = 204 ] || { echo "compose smoke: FAILED — DELETE answered $removed" >&2; exit 1; }
echo "compose smoke: the board's API added, listed and removed a rule, and it took effect"

"${compose[@]}" down -v --remove-orphans --timeout 10
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
networks=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
if [ -n "$left$networks$volumes" ]; then
  echo "compose smoke: FAILED — left behind: $left $networks $volumes" >&2
  exit 1
fi
echo "compose smoke: passed"
