#!/usr/bin/env bash
# The image, proved from outside: build it, run three replica containers against PostgreSQL,
# `docker kill` the one running a job and time the takeover by a peer, then freeze a worker
# (SIGSTOP inside its container) and time its HEALTHCHECK turning unhealthy.
#
#   deploy/smoke.sh [SERVER_URL]    (default postgresql://postgres@127.0.0.1:5432/postgres)
#
# Needs a Docker engine and psql. The containers use the host's network, so SERVER_URL is the
# address of PostgreSQL as this host sees it; a scratch database is made on it and dropped.
# No registry image is pulled: unless BASE names an image (BASE=python:3.11.10-slim-bookworm
# where the registry can be reached), a Debian bookworm base with python3, python3-venv and tini
# is made once from Debian's packages with debootstrap and kept as jobrunner-base:bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER="${1:-postgresql://postgres@127.0.0.1:5432/postgres}"
BASE="${BASE:-jobrunner-base:bookworm}"
IMAGE=jobrunner:smoke
NAME=jobrunner-smoke
LEASE_TTL=4

say() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

base_image() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then return; fi
  if [ "$BASE" != jobrunner-base:bookworm ]; then docker pull "$BASE"; return; fi
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
  local root
  root="$(mktemp -d)"
  say "making $BASE from Debian's packages (debootstrap, once)"
  debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # The base trusts what this host trusts (a proxy between this host and PyPI may sign with a
  # CA of its own); pip reads that bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  tar -C "$root" -c . | docker import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$BASE" >/dev/null
  rm -rf "$root"
}

base_image
say "building $IMAGE on $BASE"
docker build -q --network host --build-arg BASE="$BASE" -t "$IMAGE" . >/dev/null

DB="smoke_$(date +%s)_$$"
URL="${SERVER%/*}/$DB"
WORK="$(mktemp -d)"
cleanup() {
  docker rm -f "$NAME-1" "$NAME-2" "$NAME-3" >/dev/null 2>&1 || true
  psql "$SERVER" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$SERVER" -qc "CREATE DATABASE \"$DB\"" >/dev/null
sql() { psql "$URL" -Atc "$1"; }

cat >"$WORK/jobrunner.toml" <<EOF
[database]
url = "\${JOBRUNNER_DATABASE_URL}"
[worker]
lease_ttl = "${LEASE_TTL}s"
heartbeat = "1s"
shutdown_grace = "2s"
import_paths = ["/app/smoke"]
[logging]
format = "json"
[http]
listen = "127.0.0.1:\${JR_HTTP_PORT}"
[[jobs]]
name = "long"
func = "smoke_jobs:long"
retries = 2
EOF
cat >"$WORK/smoke_jobs.py" <<'EOF'
import asyncio


async def long(seconds: float = 600.0) -> None:
    await asyncio.sleep(seconds)
EOF
chmod 755 "$WORK" && chmod 644 "$WORK"/*

for i in 1 2 3; do
  docker run -d --name "$NAME-$i" --network host \
    -e JOBRUNNER_DATABASE_URL="$URL" -e JR_HTTP_PORT=$((19100 + i)) \
    -v "$WORK/jobrunner.toml:/etc/jobrunner/jobrunner.toml:ro" -v "$WORK:/app/smoke:ro" \
    --health-interval 1s --health-timeout 2s --health-retries 2 --health-start-period 3s \
    "$IMAGE" >/dev/null
done
health() { docker inspect -f '{{.State.Health.Status}}' "$1"; }
wait_until() {  # wait_until SECONDS COMMAND...: poll COMMAND until it succeeds
  local limit="$1" start
  shift
  start="$(now)"
  until "$@"; do
    if python3 -c "import sys,time; sys.exit(time.time() - float(sys.argv[1]) < float(sys.argv[2]))" "$start" "$limit"; then
      say "timed out after ${limit}s waiting for: $*"
      for i in 1 2 3; do docker logs --tail 5 "$NAME-$i" 2>&1 | sed "s/^/  $NAME-$i: /"; done
      exit 1
    fi
    sleep 0.2
  done
}
all_healthy() { for i in 1 2 3; do [ "$(health "$NAME-$i")" = healthy ] || return 1; done; }
wait_until 90 all_healthy
say "3 replica containers healthy"

docker exec "$NAME-1" jobrunner jobs trigger long -c /etc/jobrunner/jobrunner.toml >/dev/null
running() { [ -n "$(sql "SELECT worker_id FROM job_runs WHERE job_name = 'long' AND attempt = $1 AND status = 'running'")" ]; }
wait_until 30 running 1
holder="$(sql "SELECT worker_id FROM job_runs WHERE job_name = 'long' AND attempt = 1")"
victim=""
for i in 1 2 3; do
  # The logs read whole first: under pipefail, `docker logs | grep -q` fails when grep exits at
  # the first match and docker logs, still writing, gets SIGPIPE.
  logs="$(docker logs "$NAME-$i" 2>&1)"
  if grep -qF "\"worker_id\": \"$holder\"" <<<"$logs"; then victim="$NAME-$i"; fi
done
[ -n "$victim" ] || { say "no container logged worker $holder"; exit 1; }
say "attempt 1 runs in $victim ($holder): docker kill"
killed="$(now)"
docker kill "$victim" >/dev/null
wait_until $((LEASE_TTL + 20)) running 2
took="$(since "$killed")"
taker="$(sql "SELECT worker_id FROM job_runs WHERE job_name = 'long' AND attempt = 2")"
first="$(sql "SELECT status || ' (' || reason || ')' FROM job_runs WHERE job_name = 'long' AND attempt = 1")"
[ "$taker" != "$holder" ] || { say "attempt 2 ran on the killed worker"; exit 1; }
say "takeover: attempt 2 running on $taker ${took}s after the kill (lease_ttl ${LEASE_TTL}s); attempt 1: $first"

frozen=""
for i in 1 2 3; do
  if [ "$NAME-$i" != "$victim" ] && [ -z "$frozen" ]; then frozen="$NAME-$i"; fi
done
# tini is PID 1 and cannot pass on SIGSTOP: stop the jobrunner process itself (by its name)
docker exec "$frozen" sh -c 'for p in /proc/[0-9]*; do
  if [ "$(cat "$p/comm" 2>/dev/null)" = jobrunner ]; then kill -STOP "${p#/proc/}"; fi
done'
stopped="$(now)"
say "SIGSTOP to the worker in $frozen"
unhealthy() { [ "$(health "$frozen")" = unhealthy ]; }
wait_until 60 unhealthy
say "HEALTHCHECK: $frozen unhealthy $(since "$stopped")s after SIGSTOP (interval 1s, retries 2)"
say "smoke test passed"
