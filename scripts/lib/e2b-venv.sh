# Sourced by scripts/test-e2b and bench/run: `e2b_venv` makes (or reuses)
# target/e2b-venv with what tests/e2b/requirements.txt pins (the official
# E2B SDK), and prints its path.
e2b_venv() {
  local venv=target/e2b-venv
  if [ ! -x "$venv/bin/pytest" ] || [ tests/e2b/requirements.txt -nt "$venv/.installed" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q -r tests/e2b/requirements.txt >&2
    touch "$venv/.installed"
  fi
  echo "$venv"
}
