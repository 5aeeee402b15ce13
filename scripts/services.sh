#!/usr/bin/env bash
# Installs (if missing) and starts the servers wf's tests use, or stops them:
#   scripts/services.sh start|stop|status
# PostgreSQL 15 on 127.0.0.1:$WF_PG_PORT (default 55432), data in $WF_SERVICES_DIR (default
# /tmp/wf-services). PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
# Writes $WF_SERVICES_DIR/env with the URLs the tests read (source it).
set -euo pipefail

DIR=${WF_SERVICES_DIR:-/tmp/wf-services}
PG_PORT=${WF_PG_PORT:-55432}
PG_BIN=${WF_PG_BIN:-/usr/lib/postgresql/15/bin}
PGDATA="$DIR/pg"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_pg() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "services: installing PostgreSQL 15" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
}

start_pg() {
  install_pg
  mkdir -p "$DIR"
  if [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    echo "services: PostgreSQL already running on 127.0.0.1:$PG_PORT" >&2
    return
  fi
  rm -rf "$PGDATA"
  mkdir -p "$PGDATA"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$DIR"; fi
  chmod 700 "$PGDATA"
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  # Test settings: durability off for speed (never compare benchmarks against these).
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -w -l "$DIR/pg.log" start -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
  as_pg psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtAc 'select 1' >/dev/null
  echo "services: PostgreSQL started on 127.0.0.1:$PG_PORT" >&2
}

stop_pg() {
  if [ -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
  fi
}

write_env() {
  cat > "$DIR/env" <<ENV
export WF_TEST_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
ENV
}

case "${1:-start}" in
  start) start_pg; write_env ;;
  stop) stop_pg ;;
  status) as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
