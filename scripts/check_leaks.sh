#!/usr/bin/env bash
# Leak and memory-error check of the compiled extension under valgrind memcheck.
#
#   scripts/check_leaks.sh                # build the working tree with -g in a temp dir, check it
#   scripts/check_leaks.sh --installed    # check the fastjac that `python` imports
#   ROUNDS="2 10" scripts/check_leaks.sh  # the two workload sizes compared (default "2 8")
#
# What it does:
# 1. builds the extension with debug symbols (-g) in a temporary directory
#    (unless --installed), so that stacks name the .pyx lines;
# 2. runs scripts/leak_workload.py --baseline (NumPy and SciPy only) under
#    memcheck with --gen-suppressions=all: the interpreter's own noise
#    (CPython and NumPy are not valgrind-clean) becomes a suppression file,
#    on top of valgrind's python3.supp where Debian ships it;
# 3. runs the fastjac workload (every public function, error paths, out=,
#    every format, the expression layer) for two numbers of rounds;
# 4. fails if any memcheck error (invalid read/write, use of uninitialised
#    memory, bad free) or "definitely lost" block has a fastjac frame in its
#    stack, or if the bytes definitely lost grow with the number of rounds
#    (a per-call leak anywhere).
# Needs valgrind (apt-get install valgrind) and the test extras (SciPy).
# Takes 1 to 3 minutes. Exit status 0: clean; 1: findings; 2: cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

INSTALLED=0
for arg in "$@"; do
    case "$arg" in
        --installed) INSTALLED=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-"2 8"}

if ! command -v valgrind >/dev/null; then
    echo "check_leaks: valgrind not found (apt-get install valgrind)" >&2
    exit 2
fi
# The real interpreter, not a shell shim (pyenv), or valgrind would check bash.
PY=$(python -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastjac-leaks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ "$INSTALLED" = 0 ]; then
    echo "check_leaks: building the extension with -g in $WORK/build ..."
    mkdir -p "$WORK/build"
    cp -r setup.py pyproject.toml src "$WORK/build/"
    rm -f "$WORK/build"/src/fastjac/*.so "$WORK/build"/src/fastjac/*.c
    if ! (cd "$WORK/build" && CFLAGS="-g -fno-omit-frame-pointer" \
            "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1); then
        tail -30 "$WORK/build.log" >&2
        echo "check_leaks: build failed" >&2
        exit 2
    fi
    export PYTHONPATH="$WORK/build/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import fastjac, sys; print("check_leaks: checking", fastjac.__file__)'

export PYTHONMALLOC=malloc          # every object through malloc, visible to memcheck
export OMP_NUM_THREADS=2
VG=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite
    --errors-for-leak-kinds=definite --num-callers=40 --track-origins=no)
if [ -f /usr/lib/valgrind/python3.supp ]; then
    VG+=(--suppressions=/usr/lib/valgrind/python3.supp)
fi

echo "check_leaks: baseline (NumPy/SciPy noise) ..."
"${VG[@]}" --gen-suppressions=all --log-file="$WORK/baseline.log" \
    "$PY" scripts/leak_workload.py --baseline 2 >/dev/null
awk '/^\{/{keep=1} keep{print} /^\}/{keep=0}' "$WORK/baseline.log" >"$WORK/baseline.supp"
echo "check_leaks: $(grep -c '^{' "$WORK/baseline.supp" || true) baseline suppressions"

for n in $ROUNDS; do
    echo "check_leaks: fastjac workload, $n rounds ..."
    "${VG[@]}" --suppressions="$WORK/baseline.supp" --log-file="$WORK/run_$n.log" \
        "$PY" scripts/leak_workload.py "$n"
done

"$PY" - "$WORK" $ROUNDS <<'PYEOF'
import re
import sys

work, rounds = sys.argv[1], [int(r) for r in sys.argv[2:]]
OURS = re.compile(r"fastjac|_api\.pyx|_kernels|_layout|_expr|_neuron|_loops|_derivatives")


def parse(path):
    text = open(path).read()
    blocks, current = [], []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not line.startswith("=="):
            continue
        if body.strip() == "":
            if current:
                blocks.append(current)
            current = []
        else:
            current.append(body)
    if current:
        blocks.append(current)
    errors = [b for b in blocks if b and re.match(
        r"(Invalid|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|"
        r"Source and destination overlap|\d[\d,]* (\([\d,]+ direct, [\d,]+ indirect\) )?"
        r"bytes in [\d,]+ blocks are definitely lost)", b[0])]
    m = re.search(r"definitely lost: ([\d,]+) bytes", text)
    lost = int(m.group(1).replace(",", "")) if m else 0
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
    total = int(m.group(1).replace(",", "")) if m else -1
    return errors, lost, total


failed = False
losts = []
for n in rounds:
    errors, lost, total = parse(f"{work}/run_{n}.log")
    ours = [b for b in errors if any(OURS.search(line) for line in b[1:])]
    losts.append(lost)
    print(f"check_leaks: {n} rounds: {total} unsuppressed error contexts "
          f"({len(ours)} with a fastjac frame), {lost} bytes definitely lost")
    for block in ours[:10]:
        failed = True
        print("\n".join("    " + line for line in block[:25]))
if len(losts) > 1 and losts[-1] > losts[0]:
    failed = True
    print(f"check_leaks: definitely-lost bytes grow with the rounds: {losts} (a per-call leak)")
print("check_leaks: FAILED" if failed else
      "check_leaks: OK: no memcheck error and no leak in fastjac; losses do not grow with calls")
sys.exit(1 if failed else 0)
PYEOF
