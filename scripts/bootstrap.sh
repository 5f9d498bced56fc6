# Sourced by scripts/demo and scripts/test: makes .venv and installs into it exactly what
# uv.lock pins (hash-checked), the project itself editable with its dev extra. uv, pinned
# below, is installed once into .tools/ with pip; a synced environment takes well under a
# second to check, so this runs every time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PARLOA_BRIDGE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
UV_VERSION=0.13.9
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "parloa-bridge needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 2
fi
UV_HOME="$ROOT/.tools/uv-$UV_VERSION"
UV="$UV_HOME/bin/uv"
if [ ! -x "$UV" ]; then
    echo "installing uv $UV_VERSION into $UV_HOME ..." >&2
    mkdir -p "$ROOT/.tools"
    if ! "$PY" -m pip install --disable-pip-version-check --quiet --target "$UV_HOME" \
            "uv==$UV_VERSION" >"$ROOT/.tools/uv-install.log" 2>&1; then
        tail -n 20 "$ROOT/.tools/uv-install.log" >&2
        echo "uv could not be installed; the whole log is in $ROOT/.tools/uv-install.log" >&2
        exit 1
    fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log="$VENV/install.log"
# --locked: refuse (rather than re-resolve) when pyproject.toml and uv.lock disagree.
if ! UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON_DOWNLOADS=never \
        "$UV" sync --locked --extra dev --python "$VENV/bin/python" --project "$ROOT" \
        >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "installation failed; the whole log is in $log" >&2
    exit 1
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
