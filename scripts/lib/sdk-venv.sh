# Sourced by scripts/test-sdk and scripts/test-conformance: `sdk_venv` makes
# (or reuses) sdk/python/.venv with the Python SDK installed editable and its
# test extras, and prints its path. Reinstalled when pyproject.toml changed.
sdk_venv() {
  local venv=sdk/python/.venv
  if [ ! -x "$venv/bin/pytest" ] || [ sdk/python/pyproject.toml -nt "$venv/.installed" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q -e 'sdk/python[test]' >&2
    touch "$venv/.installed"
  fi
  echo "$venv"
}
