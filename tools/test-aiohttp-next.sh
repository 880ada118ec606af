#!/usr/bin/env bash
# Run the suite against the newest pre-release of the aiohttp minor release that
# setup.cfg does not admit yet (its upper bound), when the index has one.
#
#   tools/test-aiohttp-next.sh [pytest args...]
#
# setup.cfg stops at the newest minor CI has tested (README: support policy), so
# this is the early warning that the next one changed what _compat.py reads.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
bound=$(sed -n 's/^ *aiohttp>=[0-9.]*,<\([0-9.]*\)$/\1/p' setup.cfg)
if [ -z "$bound" ]; then
    echo "setup.cfg's aiohttp requirement has no upper bound of the form <X.Y" >&2
    exit 1
fi
candidate=$("$python" -m pip index versions aiohttp --pre 2>/dev/null \
    | sed -n 's/^Available versions: //p' | tr ',' '\n' | tr -d ' ' \
    | grep -E "^${bound//./\\.}\.0(a|b|rc)[0-9]+$" | sort -V | tail -n 1 || true)
if [ -z "$candidate" ]; then
    echo "no aiohttp $bound pre-release on the index: nothing to test"
    exit 0
fi
venv=.venv-matrix/aiohttp-$candidate
if [ ! -e "$venv/.installed" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -e ".[test,redis,demo]"
    # setup.cfg refuses it on purpose: install it over the admitted release.
    "$venv/bin/python" -m pip install -q --pre --no-deps "aiohttp==$candidate"
    touch "$venv/.installed"
fi
echo "=== aiohttp $candidate (not admitted by setup.cfg yet)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
