#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for aiohttp-upgrade.
#
# Usage: bash conformance/run.sh quick|full
#   quick  groups 1-7 and 10 plus a sample of 12 and 13; checks only (CI).
#   full   every case ("*"); also rewrites docs/conformance.rst.
#
# Runs `wstest -m fuzzingclient` (autobahntestsuite, a Python 2.7 program)
# twice against conformance/echo_server.py: once with per_message_deflate off,
# once on. Reports land in conformance/reports/MODE/deflate-{off,on}/ (one
# JSON and one HTML file per case, index.json/index.html, server.log,
# wstest.log). conformance/summarize.py then prints a summary and exits
# non-zero, as does this script, if any case has an unacceptable verdict.
#
# Environment:
#   PY           Python 3 with aiohttp-upgrade installed, for the echo server
#                and summarize.py (default: .venv/bin/python).
#   PYTHON27     CPython 2.7 to build conformance/.venv27 from (default:
#                `pyenv prefix 2.7.18`, then any pyenv 2.7, then python2.7).
#   ECHO_SERVER  server script with echo_server.py's command line
#                (default: conformance/echo_server.py).
#   DEFLATE_ON   the echo server's --deflate for the "on" run: on (the
#                default, shared mode) or dedicated.
set -euo pipefail

mode=${1:-}
case "$mode" in
quick | full) ;;
*)
    echo "usage: bash conformance/run.sh quick|full" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
root=$PWD
here=$root/conformance
PY=${PY:-.venv/bin/python}
ECHO_SERVER=${ECHO_SERVER:-conformance/echo_server.py}
venv27=$here/.venv27
req27=$here/requirements27.txt
# The last virtualenv that runs on Python 2.7 (20.16 dropped it).
virtualenv_spec='virtualenv==20.15.1'
reports=$here/reports/$mode

if [ "$mode" = quick ]; then
    # 12.1 and 13.1 are the default offer with every payload size; 13.2-13.7
    # each add one parameter combination (context takeover, window bits).
    cases='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*",
            "12.1.*", "13.1.*", "13.2.1", "13.3.1", "13.4.1", "13.5.1",
            "13.6.1", "13.7.1"]'
    wstest_limit=1200
else
    cases='["*"]'
    wstest_limit=3600
fi

log() { printf '[conformance] %s\n' "$*"; }
die() {
    printf '[conformance] error: %s\n' "$*" >&2
    exit 1
}
elapsed() { echo "$((SECONDS - $1))s"; }

server_pid=
wstest_pid=
cleanup() {
    for pid in $wstest_pid $server_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    wstest_pid=
    server_pid=
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Python 2.7 and the suite --------------------------------------------

find_python27() {
    local prefix candidate
    if [ -n "${PYTHON27:-}" ]; then
        echo "$PYTHON27"
        return 0
    fi
    if command -v pyenv >/dev/null 2>&1 && prefix=$(pyenv prefix 2.7.18 2>/dev/null); then
        echo "$prefix/bin/python2.7"
        return 0
    fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    command -v python2.7
}

venv27_works() {
    [ -f "$venv27/.conformance-stamp" ] &&
        [ "$(cat "$venv27/.conformance-stamp")" = "$1" ] &&
        [ -x "$venv27/bin/wstest" ] &&
        "$venv27/bin/python" -c 'import autobahntestsuite' >/dev/null 2>&1
}

setup_venv27() {
    local start=$SECONDS py27 stamp setup_log
    py27=$(find_python27) || true
    if [ -z "$py27" ] || ! "$py27" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
        die "${py27:+$py27 is not a working Python 2.7. }Autobahn|Testsuite needs CPython 2.7:
    install it with 'pyenv install 2.7.18', or point PYTHON27 at a python2.7."
    fi
    stamp="$("$py27" -c 'import sys; print(sys.executable)') $(sha256sum <"$req27" | cut -d' ' -f1)"
    if venv27_works "$stamp"; then
        log "reusing $venv27"
        return 0
    fi
    mkdir -p "$here/reports"
    setup_log=$here/reports/setup27.log
    : >"$setup_log"
    log "building $venv27 from $py27 (log: $setup_log)"
    if ! "$py27" -m virtualenv --version >/dev/null 2>&1; then
        if ! "$py27" -m pip --version >/dev/null 2>&1; then
            "$py27" -m ensurepip >>"$setup_log" 2>&1 || die "no pip for $py27; see $setup_log"
        fi
        "$py27" -m pip install --disable-pip-version-check -q "$virtualenv_spec" >>"$setup_log" 2>&1 ||
            die "could not install $virtualenv_spec into $py27; see $setup_log"
    fi
    rm -rf "$venv27"
    "$py27" -m virtualenv -q "$venv27" >>"$setup_log" 2>&1 ||
        die "virtualenv failed; see $setup_log"
    "$venv27/bin/pip" install --disable-pip-version-check -q -r "$req27" >>"$setup_log" 2>&1 || {
        grep -v 'is ignored' "$setup_log" | tail -n 30 >&2
        die "could not install the suite into $venv27; see $setup_log"
    }
    "$venv27/bin/python" -c 'import autobahntestsuite' >>"$setup_log" 2>&1 ||
        die "autobahntestsuite does not import; see $setup_log"
    echo "$stamp" >"$venv27/.conformance-stamp"
    log "suite installed in $(elapsed "$start")"
}

# --- One configuration: echo server + fuzzing client ---------------------

start_server() { # deflate(off|on) outdir
    local port_file=$2/server.port i
    rm -f "$port_file"
    local deflate=$1
    [ "$deflate" = on ] && deflate=${DEFLATE_ON:-on}
    "$PY" "$ECHO_SERVER" --deflate "$deflate" --port 0 --port-file "$port_file" >"$2/server.log" 2>&1 &
    server_pid=$!
    for i in $(seq 300); do
        [ -s "$port_file" ] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            tail -n 30 "$2/server.log" >&2
            die "echo server ($ECHO_SERVER, deflate $1) exited before listening"
        fi
        sleep 0.1
    done
    [ -s "$port_file" ] || die "echo server did not start listening within 30 s; see $2/server.log"
    port=$(cat "$port_file")
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing accepts connections on 127.0.0.1:$port; see $2/server.log"
}

run_config() { # deflate(off|on)
    local deflate=$1 outdir=$reports/deflate-$1 start=$SECONDS rc=0 port=
    rm -rf "$outdir"
    mkdir -p "$outdir"
    start_server "$deflate" "$outdir"
    cat >"$outdir/spec.json" <<EOF
{
  "outdir": "$outdir",
  "servers": [
    {"agent": "aiohttp-upgrade deflate-$deflate", "url": "ws://127.0.0.1:$port/"}
  ],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
    log "deflate $deflate: fuzzing ws://127.0.0.1:$port/ (log: $outdir/wstest.log)"
    (cd "$outdir" && exec timeout "$wstest_limit" "$venv27/bin/wstest" -m fuzzingclient -s spec.json) \
        >"$outdir/wstest.log" 2>&1 &
    wstest_pid=$!
    wait "$wstest_pid" || rc=$?
    wstest_pid=
    cleanup
    if [ "$rc" -ne 0 ] || [ ! -f "$outdir/index.json" ]; then
        tail -n 30 "$outdir/wstest.log" >&2
        [ "$rc" -eq 124 ] && die "wstest did not finish within ${wstest_limit}s; see $outdir/wstest.log"
        die "wstest failed (exit $rc, index.json missing or incomplete); see $outdir/wstest.log"
    fi
    log "deflate $deflate: $(grep -c '^Running test case' "$outdir/wstest.log") cases in $(elapsed "$start")"
}

total=$SECONDS
setup_venv27
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "no Python 3 at $PY (run 'make conformance' or set PY)"
run_config off
run_config on

summary=(--off "$reports/deflate-off" --on "$reports/deflate-on")
if [ "$mode" = full ]; then
    summary+=(--write docs/conformance.rst)
fi
rc=0
"$PY" conformance/summarize.py "${summary[@]}" || rc=$?
log "$mode run took $(elapsed "$total")"
exit "$rc"
