#!/usr/bin/env bash
# Installs (if missing) and starts the servers wf's tests use, or stops them:
#   scripts/services.sh start|stop|status
# PostgreSQL 15 on 127.0.0.1:$WF_PG_PORT (default 55432), data in $WF_SERVICES_DIR (default
# /tmp/wf-services). PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
# ArcadeDB (speaks Bolt + OpenCypher; stands in for Neo4j, which cannot be installed here) on
# 127.0.0.1:$WF_BOLT_PORT (default 17687), HTTP on $WF_ARCADE_HTTP_PORT (default 12480), installed
# from PyPI into $WF_SERVICES_DIR/venv (it carries its own Java runtime).
# Writes $WF_SERVICES_DIR/env with the URLs the tests read (source it).
set -euo pipefail

DIR=${WF_SERVICES_DIR:-/tmp/wf-services}
PG_PORT=${WF_PG_PORT:-55432}
PG_BIN=${WF_PG_BIN:-/usr/lib/postgresql/15/bin}
PGDATA="$DIR/pg"
BOLT_PORT=${WF_BOLT_PORT:-17687}
HTTP_PORT=${WF_ARCADE_HTTP_PORT:-12480}
ARCADE_PW=${WF_ARCADE_PASSWORD:-wf-test-pw}
ARCADE_DIR="$DIR/arcadedb"
VENV="$DIR/venv"

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

arcade_pkg() {
  # Locates the package without importing it (its Python side needs jpype, which wf does not use).
  "$VENV/bin/python" -c 'import importlib.util as u,os;print(os.path.dirname(u.find_spec("arcadedb_embedded").origin))'
}

install_arcade() {
  if [ -x "$VENV/bin/python" ] && arcade_pkg >/dev/null 2>&1; then return; fi
  echo "services: installing ArcadeDB (PyPI arcadedb-embedded, ~71 MB)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-deps arcadedb-embedded==26.10.2.post1
}

arcade_ready() {
  # The credentials go through stdin (printf is a builtin), never on a command line `ps` shows.
  printf 'user = "root:%s"\n' "$ARCADE_PW" |
    curl -fs -K - "http://127.0.0.1:$HTTP_PORT/api/v1/exists/prod_sp" 2>/dev/null | grep -q '"result":true'
}

start_arcade() {
  if arcade_ready; then
    echo "services: ArcadeDB already running (Bolt 127.0.0.1:$BOLT_PORT)" >&2
    return
  fi
  install_arcade
  local pkg; pkg=$(arcade_pkg)
  rm -rf "$ARCADE_DIR"; mkdir -p "$ARCADE_DIR/databases"
  # The root password goes in a Java @argfile (0600), so `ps` shows the file name, not the secret.
  local args="$DIR/arcadedb.args"
  (umask 077; printf -- '-Darcadedb.server.rootPassword=%s\n' "$ARCADE_PW" > "$args")
  # From its own directory: ArcadeDB writes its log/ next to where it starts.
  (cd "$ARCADE_DIR" && exec nohup "$pkg/jre/bin/java" -Xms128m -Xmx1g -cp "$pkg/jars/*" \
    -Darcadedb.server.rootPath="$ARCADE_DIR" \
    -Darcadedb.server.databaseDirectory="$ARCADE_DIR/databases" \
    "@$args" \
    -Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin \
    -Darcadedb.bolt.host=127.0.0.1 -Darcadedb.bolt.port="$BOLT_PORT" \
    -Darcadedb.server.httpIncomingHost=127.0.0.1 -Darcadedb.server.httpIncomingPort="$HTTP_PORT" \
    "-Darcadedb.server.defaultDatabases=prod_sp[root];cert_sp[root]" \
    com.arcadedb.server.ArcadeDBServer >"$DIR/arcadedb.log" 2>&1) &
  echo $! > "$DIR/arcadedb.pid"
  for _ in $(seq 1 120); do
    if arcade_ready; then echo "services: ArcadeDB started (Bolt 127.0.0.1:$BOLT_PORT)" >&2; return; fi
    sleep 0.5
  done
  echo "services: ArcadeDB did not start; see $DIR/arcadedb.log" >&2
  tail -20 "$DIR/arcadedb.log" >&2
  exit 1
}

stop_arcade() {
  if [ -f "$DIR/arcadedb.pid" ]; then
    kill "$(cat "$DIR/arcadedb.pid")" 2>/dev/null || true
    rm -f "$DIR/arcadedb.pid"
  fi
}

# Debian's Chromium, for the dashboard's headless-browser test.
install_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "services: installing Chromium (Debian) for the browser test" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

write_env() {
  (umask 077; : > "$DIR/env"); chmod 600 "$DIR/env"
  cat > "$DIR/env" <<ENV
export WF_TEST_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export WF_TEST_PG_SOCKET_DIR=$PGDATA
export WF_TEST_BOLT_URL=127.0.0.1:$BOLT_PORT
export WF_TEST_BOLT_USER=root
export WF_TEST_BOLT_PASSWORD=$ARCADE_PW
export WF_TEST_ARCADE_HTTP=http://127.0.0.1:$HTTP_PORT
export WF_TEST_ARCADE_PKG=$(arcade_pkg)
export WF_TEST_PG_BIN=$PG_BIN
export WF_TEST_CHROMIUM=$(command -v chromium || true)
ENV
}

case "${1:-start}" in
  start) start_pg; start_arcade; install_chromium; write_env ;;
  stop) stop_pg; stop_arcade ;;
  status) as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status; arcade_ready && echo "ArcadeDB up" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
