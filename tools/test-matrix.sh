#!/usr/bin/env bash
# Run the test suite against each (Python, aiohttp) pair of the support matrix.
#
#   tools/test-matrix.sh "3.11 3.13" "3.14.4 3.14.5" [pytest args...]
#
# Each pair gets its own virtualenv in .venv-matrix/ (kept while setup.cfg is
# unchanged) with the package installed editable with its `test` and `redis`
# extras and the given aiohttp pinned.
# Pythons are found under pyenv's versions directory, else as pythonX.Y on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
pythons=$1
versions=$2
shift 2

find_python() {
    local found
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$found" ] && "python$1" -c '' 2>/dev/null; then
        found=$(command -v "python$1")
    fi
    if [ -z "$found" ]; then
        echo "Python $1 not found (install it, e.g. with pyenv)" >&2
        return 1
    fi
    echo "$found"
}

failed=()
for py in $pythons; do
    python=$(find_python "$py")
    for aiohttp in $versions; do
        venv=.venv-matrix/py$py-aiohttp$aiohttp
        echo "=== Python $py ($python), aiohttp $aiohttp"
        # Reinstalled whenever setup.cfg (the dependencies) changes.
        marker="$venv/.installed-$(sha1sum setup.cfg | cut -c1-12)"
        if [ ! -e "$marker" ]; then
            rm -rf "$venv"
            "$python" -m venv "$venv"
            "$venv/bin/python" -m pip install -q -e '.[test,redis]' "aiohttp==$aiohttp"
            touch "$marker"
        fi
        "$venv/bin/python" -c "import aiohttp, sys; print('aiohttp', aiohttp.__version__, 'on', sys.version.split()[0])"
        if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"; then
            failed+=("Python $py / aiohttp $aiohttp")
        fi
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "matrix green: Python {$pythons} x aiohttp {$versions}"
