#!/usr/bin/env bash
# One command for the whole benchmark (`make bench`): installs wrk if missing, uses the project
# venv, bounds everything in time, writes bench/RESULTS.md and bench/results.json.
# Extra arguments go to bench/bench.py (e.g. --duration 5 --rounds 1, or --only scrape).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    timeout 300 $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 300 $SUDO apt-get install -y -qq wrk >/dev/null
fi
for tool in taskset timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is required (util-linux, coreutils)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2
    exit 2
fi

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "bench: creating .venv with the project and its [fast] extra" >&2
    python3 -m venv .venv
    timeout 600 .venv/bin/pip install -q -e '.[fast]'
fi
"$PY" -c 'import aiohttp, prometheus_client, yaml' 2>/dev/null || timeout 600 .venv/bin/pip install -q -e '.[fast]'

# The bench driver (and the wrk it starts) on CPU 1; it pins every server to CPU 0 itself.
# 15 minutes is the hard bound for the whole run (it normally takes 5-7).
exec timeout --kill-after=10 900 taskset -c 1 "$PY" bench/bench.py "$@"
