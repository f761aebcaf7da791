#!/usr/bin/env bash
# Run a bounded, real subset of the tests on CPUs this machine may not have,
# under qemu-user: "Nehalem" (SSE4.2, no AVX: the baseline loops) and
# "Haswell" (AVX2 + FMA, no AVX-512), each asking for avx512 so that the cap
# is exercised. The subset: the level chosen (show_config), every operator at
# every size class (serial and threaded), broadcast operands and their
# fused row sums, compiled expressions with the JIT
# (its compiler runs natively; the code it builds runs emulated), the neuron.
# Uses the installed fastjac (run after `pip install ".[test]"`).
# qemu-user cannot emulate AVX-512, so that level is only ever tested natively.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -m)" != "x86_64" ]; then
    echo "emulated CPUs: not an x86-64 machine, skipped"
    exit 0
fi
if ! command -v qemu-x86_64 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
fi

PY=$(python -c 'import sys; print(sys.executable)')
SUBSET=(tests/test_portability.py tests/test_elementwise.py tests/test_reduce.py
        tests/test_expand.py tests/test_broadcast.py tests/test_jit.py tests/test_neuron.py
        "tests/test_expr.py::test_simd_levels_agree")

for spec in Nehalem:baseline Haswell:avx2; do
    cpu=${spec%%:*} level=${spec#*:}
    echo "== qemu-x86_64 -cpu $cpu (expect the $level loops)"
    start=$(date +%s)
    # qemu warns once per CPUID feature its TCG lacks (TSX, INVPCID...): noise
    QEMU_CPU=$cpu FASTJAC_SIMD=avx512 FASTJAC_EXPECT_SIMD=$level \
        qemu-x86_64 "$PY" -c 'import fastjac; fastjac.show_config()' 2> >(grep -v '^qemu-x86_64: warning' >&2)
    QEMU_CPU=$cpu FASTJAC_SIMD=avx512 FASTJAC_EXPECT_SIMD=$level FASTJAC_TEST_EMULATOR="$(command -v qemu-x86_64)" \
        qemu-x86_64 "$PY" -m pytest -q -p no:cacheprovider "${SUBSET[@]}" -k "not example_trains" \
        2> >(grep -v '^qemu-x86_64: warning' >&2)
    echo "== $cpu: $(( $(date +%s) - start )) s"
done
