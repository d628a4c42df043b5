# Sourced by scripts/test: a throw-away PostgreSQL cluster for the tests.
# pg_start: initdb in a fresh temp dir as an unprivileged user (`nobody` when we are
# root: PostgreSQL refuses to run as root), listening on a Unix socket in that dir only
# (listen_addresses = '', no TCP), trust authentication for that socket (the dir is
# 0700, only its owner and root reach it). Exports EMPREINTE_TEST_PG_URL, the URL of
# its `postgres` database; the tests create a database of their own in it.
# pg_stop: stops the cluster and removes the dir (scripts/test calls it from its trap).
# Durability is off (fsync, full_page_writes): the cluster lives for one test run.

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
  [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

pg_as_owner() { # runs "$@" as the cluster's owner
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_OWNER" -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  local bin
  bin=$(pg_bindir) || true
  if [ -z "$bin" ]; then
    if [ "${CI:-}" = true ]; then echo "error: PostgreSQL (initdb, pg_ctl) is required in CI and was not found" >&2; exit 1; fi
    echo "note: PostgreSQL not available; the PostgreSQL tests will say so" >&2
    return 0
  fi
  PG_BIN=$bin
  PG_OWNER=$(id -un)
  if [ "$(id -u)" = 0 ]; then PG_OWNER=nobody; fi
  PG_DIR=$(mktemp -d /tmp/empreinte-pg.XXXXXX)
  chmod 0700 "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown "$PG_OWNER" "$PG_DIR"; fi
  echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'): throw-away cluster in $PG_DIR (socket only, as $PG_OWNER)"
  if ! pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U empreinte -A trust -E UTF8 \
      --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log" >&2
    echo "error: initdb failed" >&2
    exit 1
  fi
  if ! pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses='' -c unix_socket_directories='$PG_DIR' -c max_connections=400 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c shared_buffers=64MB" \
      start >/dev/null; then
    cat "$PG_DIR/server.log" >&2
    echo "error: the PostgreSQL cluster did not start" >&2
    exit 1
  fi
  export EMPREINTE_TEST_PG_URL="postgres://empreinte@localhost/postgres?host=$PG_DIR"
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
