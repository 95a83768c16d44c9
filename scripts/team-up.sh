#!/usr/bin/env bash
# What a team runs for bakery on its server machine: PostgreSQL (127.0.0.1 only), `prefect server start` on
# it, the work pool `bakery-process`, the deployments of prefect.yaml, and N local process workers. Then it
# prints the command that starts a worker on each other machine. Idempotent: what already runs is left
# running. `scripts/team-up.sh --down` stops what it started (by the PIDs it recorded), keeping the data.
#
#   scripts/team-up.sh [--workers N] [--dir DIR]      # default: 1 worker, DIR=$BAKERY_TEAM_DIR or ./.team
#   scripts/team-up.sh --down [--dir DIR]
#
# Environment: BAKERY_TEAM_DIR (the data directory), BAKERY_PG_PORT (55432), BAKERY_SERVER_HOST (127.0.0.1:
# set 0.0.0.0 only behind your TLS proxy and authentication), BAKERY_SERVER_PORT (4200), BAKERY_PG_OS_USER
# (the non-root user PostgreSQL runs as when this runs as root; default postgres, else nobody).
# The database password is generated once into DIR/postgres/password (mode 0600) and reaches the server
# only through its environment (PREFECT_API_DATABASE_CONNECTION_URL), never a command line.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# PostgreSQL's server binaries: BAKERY_PG_BIN, else where initdb is on PATH, else Debian's newest
# /usr/lib/postgresql/<version>/bin (the postgresql package does not put initdb on PATH).
pg_bin() {
  if [ -n "${BAKERY_PG_BIN:-}" ]; then echo "$BAKERY_PG_BIN"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
BIN=$(pg_bin)
VENV_BIN="$REPO/.venv/bin"
TEAM_DIR=${BAKERY_TEAM_DIR:-$REPO/.team}
PG_PORT=${BAKERY_PG_PORT:-55432}
HOST=${BAKERY_SERVER_HOST:-127.0.0.1}
PORT=${BAKERY_SERVER_PORT:-4200}
WORKERS=1
DOWN=false

die() { echo "team-up.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --down) DOWN=true ;;
    --workers) [ $# -ge 2 ] || die "--workers needs a number"; WORKERS=$2; shift ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a directory"; TEAM_DIR=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (expected --workers N, --dir DIR or --down)" ;;
  esac
  shift
done
case "$WORKERS" in ''|*[!0-9]*) die "--workers $WORKERS: expected a number (0 or more)" ;; esac
for tool in initdb pg_ctl postgres; do [ -x "$BIN/$tool" ] || die "$BIN/$tool not found: install PostgreSQL (Debian: apt-get install postgresql; scripts/setup.sh --test does) or set BAKERY_PG_BIN"; done
[ -x "$VENV_BIN/prefect" ] || die "$VENV_BIN/prefect not found: run scripts/setup.sh first"
"$VENV_BIN/python" -c "import asyncpg" 2>/dev/null || die "asyncpg is not installed in .venv: run scripts/setup.sh"

mkdir -p "$TEAM_DIR"
TEAM_DIR=$(cd "$TEAM_DIR" && pwd)
PG_DIR="$TEAM_DIR/postgres"
PG_DATA="$PG_DIR/data"
PASSWORD_FILE="$PG_DIR/password"
RUN_DIR="$TEAM_DIR/run"
API_URL="http://127.0.0.1:$PORT/api"
mkdir -p "$RUN_DIR"

if [ "$(id -u)" = 0 ]; then
  PG_OS_USER=${BAKERY_PG_OS_USER:-$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)}
  as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
  PG_OS_USER=$(id -un)
  as_pg() { "$@"; }
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Start "$@" in its own session (so --down stops its children too), record the PID in $1.
start_recorded() {
  local pidfile=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

stop_recorded() {
  local pidfile=$1 what=$2 pid
  if alive "$pidfile"; then
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped $what (pid $pid)"
  fi
  rm -f "$pidfile"
}

if $DOWN; then
  for pidfile in "$RUN_DIR"/worker-*.pid; do
    [ -e "$pidfile" ] && stop_recorded "$pidfile" "worker $(basename "$pidfile" .pid)"
  done
  stop_recorded "$RUN_DIR/server.pid" "the Prefect server"
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null && echo "stopped PostgreSQL ($PG_DATA)"
  fi
  exit 0
fi

# 1. PostgreSQL, listening on 127.0.0.1 only, password authentication, its data under $PG_DATA.
if [ ! -f "$PG_DATA/PG_VERSION" ]; then
  mkdir -p "$PG_DIR"
  umask 077
  "$VENV_BIN/python" -c "import secrets; print(secrets.token_urlsafe(24))" >"$PASSWORD_FILE"
  umask 022
  if [ "$(id -u)" = 0 ]; then chown -R "$PG_OS_USER" "$PG_DIR"; chmod o+x "$TEAM_DIR"; fi
  as_pg test -r "$PASSWORD_FILE" \
    || die "$TEAM_DIR: the user $PG_OS_USER cannot reach it (a parent directory is closed to it): choose another --dir"
  as_pg "$BIN/initdb" -D "$PG_DATA" -U prefect --pwfile="$PASSWORD_FILE" --auth=scram-sha-256 \
    --encoding=UTF8 --no-instructions >"$PG_DIR/initdb.log"
  echo "initialised PostgreSQL in $PG_DATA (user prefect, run as $PG_OS_USER)"
fi
if ! as_pg "$BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" start >/dev/null
  echo "started PostgreSQL on 127.0.0.1:$PG_PORT"
else
  echo "PostgreSQL already runs ($PG_DATA)"
fi
PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$(cat "$PASSWORD_FILE")@127.0.0.1:$PG_PORT/prefect"
export PREFECT_API_DATABASE_CONNECTION_URL
# the `prefect` database (the password comes from the environment, not the command line)
BAKERY_PG_PORT=$PG_PORT BAKERY_PG_PASSWORD=$(cat "$PASSWORD_FILE") "$VENV_BIN/python" - <<'EOF'
import asyncio, os
import asyncpg

async def main() -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["BAKERY_PG_PORT"]), user="prefect",
                                 password=os.environ["BAKERY_PG_PASSWORD"], database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'prefect'"):
            await conn.execute("CREATE DATABASE prefect")
            print("created the database prefect")
    finally:
        await conn.close()

asyncio.run(main())
EOF

# 2. The Prefect server on that database.
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
if alive "$RUN_DIR/server.pid"; then
  echo "the Prefect server already runs (pid $(cat "$RUN_DIR/server.pid"))"
else
  start_recorded "$RUN_DIR/server.pid" "$TEAM_DIR/server.log" \
    "$VENV_BIN/prefect" server start --host "$HOST" --port "$PORT"
  for _ in $(seq 1 120); do
    curl -fsS "$API_URL/health" >/dev/null 2>&1 && break
    alive "$RUN_DIR/server.pid" || die "the Prefect server exited: see $TEAM_DIR/server.log"
    sleep 1
  done
  curl -fsS "$API_URL/health" >/dev/null 2>&1 || die "the Prefect server did not answer on $API_URL: see $TEAM_DIR/server.log"
  echo "started the Prefect server on $HOST:$PORT (PostgreSQL), UI at http://$HOST:$PORT"
fi
unset PREFECT_API_DATABASE_CONNECTION_URL  # only the server needs it
export PREFECT_API_URL=$API_URL

# 3. The work pool and the deployments.
if "$VENV_BIN/prefect" work-pool inspect bakery-process >/dev/null 2>&1; then
  echo "work pool bakery-process exists"
else
  "$VENV_BIN/prefect" work-pool create bakery-process --type process >/dev/null
  echo "created work pool bakery-process"
fi
"$VENV_BIN/prefect" --no-prompt deploy --all >"$TEAM_DIR/deploy.log" 2>&1 \
  || die "prefect deploy --all failed: see $TEAM_DIR/deploy.log"
echo "registered the deployments of prefect.yaml"

# 4. Local workers, each with its own state directory.
for n in $(seq 1 "$WORKERS"); do
  pidfile="$RUN_DIR/worker-$n.pid"
  if alive "$pidfile"; then
    echo "worker $n already runs (pid $(cat "$pidfile"))"
    continue
  fi
  mkdir -p "$TEAM_DIR/worker-$n/state"
  (cd "$TEAM_DIR/worker-$n" && start_recorded "$pidfile" "$TEAM_DIR/worker-$n.log" \
    env BAKERY_STATE_DIR="$TEAM_DIR/worker-$n/state" BAKERY_CHECKOUT="$REPO" \
    "$VENV_BIN/prefect" worker start --pool bakery-process --type process --name "$(hostname)-$n")
  echo "started worker $n (log $TEAM_DIR/worker-$n.log)"
done

cat <<EOF

On each other machine (a bakery checkout set up with scripts/setup.sh, packer and Docker), start a worker:

    export PREFECT_API_URL=http://<this machine>:$PORT/api
    BAKERY_STATE_DIR=/var/lib/bakery BAKERY_CHECKOUT=/path/to/bakery \\
      .venv/bin/prefect worker start --pool bakery-process --type process

The weekly rebuild then runs each family as an image-pipeline deployment run that any free worker takes.
Stop what this script started: scripts/team-up.sh --down${TEAM_DIR:+ --dir $TEAM_DIR}
EOF
