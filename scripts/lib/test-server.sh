# Sourced by test scripts: `start_test_server IMAGE...` builds the CLI and
# the guest images named (cached in ./data), starts `hearth serve` on free
# ports over a fresh data directory, waits until it answers, and stops it
# (with every VM it started) when the script exits. It sets:
#   HEARTH_TEST_URL      the API, http://127.0.0.1:PORT
#   HEARTH_TEST_PREVIEW  the proxy, http://127.0.0.1:PORT
#   HEARTH_TEST_KEY      the admin key
#   HEARTH_TEST_LOG      the server's log file
#   HEARTH_TEST_DATA     its data directory (the sandboxes' files on the host)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_test_server() {
  kill "$hearth_test_pid" 2>/dev/null || true
  wait "$hearth_test_pid" 2>/dev/null || true
  # VMs outlive their server by design; these must not outlive the test.
  # Matched by the data directory in their command line, as test-fuzz
  # does: a pid file can outlive its VM, and its pid be reused by an
  # unrelated process group.
  pkill -9 -f "$hearth_test_work/data/sandboxes/" 2>/dev/null || true
  rm -rf "$hearth_test_work"
}

start_test_server() {
  cargo build -q --locked -p hearth-cli
  for image in "$@"; do
    target/debug/hearth image build "$image" --data-dir data >/dev/null
  done
  hearth_test_work=$(mktemp -d)
  local port pport
  port=$(free_port)
  pport=$(free_port)
  HEARTH_PREVIEW_LISTEN="127.0.0.1:$pport" target/debug/hearth serve \
    --listen "127.0.0.1:$port" --data-dir "$hearth_test_work/data" --images-dir "$PWD/data" \
    >"$hearth_test_work/server.log" 2>&1 &
  hearth_test_pid=$!
  trap stop_test_server EXIT
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  HEARTH_TEST_URL="http://127.0.0.1:$port"
  HEARTH_TEST_PREVIEW="http://127.0.0.1:$pport"
  HEARTH_TEST_KEY=$(cat "$hearth_test_work/data/admin.key")
  HEARTH_TEST_LOG="$hearth_test_work/server.log"
  HEARTH_TEST_DATA="$hearth_test_work/data"
}
