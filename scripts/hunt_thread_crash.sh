#!/usr/bin/env bash
# Hunt an intermittent crash in the threaded code: run the thread and pool
# tests N times (default 200) in fresh processes under faulthandler, with the
# thread count and hypothesis seed varying, and keep the log of any run that
# fails. Prints "<runs> passed, <failures> failed" at the end.
#   bash scripts/hunt_thread_crash.sh [N] [log-dir]
# Uses the fastjac that `python` imports (installed, or PYTHONPATH=src).
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
logs=${2:-$(mktemp -d)}
passed=0 failed=0
for i in $(seq 1 "$n"); do
    threads=$(( i % 2 * 2 + 2 ))   # 2, or 4 on 2 cores: more preemption
    if FASTJAC_NUM_THREADS=$threads python -X faulthandler -m pytest -q -x -p no:cacheprovider \
            -p no:randomly tests/test_threads.py tests/test_pool.py \
            --hypothesis-seed="$i" > "$logs/run-$i.log" 2>&1; then
        passed=$((passed + 1)); rm -f "$logs/run-$i.log"
    else
        failed=$((failed + 1)); echo "run $i failed: $logs/run-$i.log"
    fi
done
echo "thread-crash hunt: $passed passed, $failed failed (logs of failures in $logs)"
