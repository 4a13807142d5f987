#!/usr/bin/env bash
# Creates (idempotently) a Python venv for the DBOS peer benchmark and installs
# bench/dbos/requirements.txt into it, then prints the venv's python path.
#
#   bash bench/dbos/setup.sh [VENV_DIR]      # default: target/dbos-venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-target/dbos-venv}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv at $venv" >&2
    python3 -m venv "$venv"
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" >&2

# Check the install is importable and is the pinned version.
"$venv/bin/python" - <<'PY' >&2
from importlib.metadata import version
v = version("dbos")
assert v == "3.4.0", f"expected dbos 3.4.0, got {v}"
import dbos  # noqa: F401
print(f"dbos {v} ok")
PY

echo "$(cd "$venv" && pwd)/bin/python"
