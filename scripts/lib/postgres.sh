# Sourced by scripts/test: `start_test_postgres` starts a throwaway
# PostgreSQL (Debian's package) in a temp dir, as the `postgres` user when
# run as root, listening on a Unix socket in that dir only (no TCP port);
# exports HEARTH_TEST_DATABASE_URL for the tests, which each make a schema
# of their own; `stop_test_postgres` stops it and removes the dir.

start_test_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ]; then
    echo "postgres: no /usr/lib/postgresql/*/bin; run scripts/setup" >&2
    return 1
  fi
  hearth_pg_dir=$(mktemp -d /tmp/hearth-pg.XXXXXX)
  chmod 755 "$hearth_pg_dir"
  hearth_pg_run=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$hearth_pg_dir"
    hearth_pg_run=(runuser -u postgres --)
  fi
  if ! "${hearth_pg_run[@]}" "$bin/initdb" -D "$hearth_pg_dir/data" -U hearth \
    --auth=trust -E UTF8 --no-sync >"$hearth_pg_dir/initdb.log" 2>&1; then
    cat "$hearth_pg_dir/initdb.log" >&2
    return 1
  fi
  if ! "${hearth_pg_run[@]}" "$bin/pg_ctl" -D "$hearth_pg_dir/data" -w \
    -l "$hearth_pg_dir/server.log" \
    -o "-k $hearth_pg_dir -c listen_addresses= -c fsync=off -c max_connections=400" \
    start >/dev/null; then
    cat "$hearth_pg_dir/server.log" >&2
    return 1
  fi
  hearth_pg_bin=$bin
  HEARTH_TEST_DATABASE_URL="postgres://hearth@localhost/postgres?host=$hearth_pg_dir"
  export HEARTH_TEST_DATABASE_URL
}

stop_test_postgres() {
  [ -n "${hearth_pg_dir:-}" ] || return 0
  "${hearth_pg_run[@]}" "$hearth_pg_bin/pg_ctl" -D "$hearth_pg_dir/data" -m immediate stop \
    >/dev/null 2>&1 || true
  rm -rf "$hearth_pg_dir"
  hearth_pg_dir=
}
