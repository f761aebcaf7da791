"""Signatures and static types of the public API.

* ``inspect.signature`` works on the compiled functions (IDEs, Jupyter and
  ``help`` read it): the Cython modules carry their signatures as
  ``__text_signature__`` (setup.py, ``embedsignature.format = "clinic"``).
* The stubs (src/fastjac/*.pyi, with py.typed) give mypy real types: a typed
  snippet using the public API passes ``mypy --strict``, types that were
  ``Any`` are asserted with ``assert_type``, and misuse is reported.
* ``mypy.stubtest`` checks the stubs against the code, so they cannot drift
  (names and parameters). Every compiled module and every extension type,
  internal ones included, has its stub; STUBTEST_ALLOWLIST names only
  Cython's own module attributes.

The mypy tests are skipped, saying why, when mypy is not installed
(``pip install ".[test]"`` installs it).
"""
import importlib.machinery
import importlib.util
import inspect
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastjac
from fastjac import _simd

P = inspect.Parameter

# (name, kind, default) of every parameter; P.empty: no default
SIGNATURES = {
    "jacobian": [("op", P.POSITIONAL_OR_KEYWORD, P.empty),
                 ("a", P.POSITIONAL_OR_KEYWORD, P.empty),
                 ("b", P.POSITIONAL_OR_KEYWORD, None),
                 ("wrt", P.KEYWORD_ONLY, 0),
                 ("layout", P.KEYWORD_ONLY, "numerator"),
                 ("format", P.KEYWORD_ONLY, "compact"),
                 ("out", P.KEYWORD_ONLY, None)],
    "kernel": [("op", P.POSITIONAL_OR_KEYWORD, P.empty),
               ("wrt", P.POSITIONAL_OR_KEYWORD, 0)],
    "set_num_threads": [("threads", P.POSITIONAL_OR_KEYWORD, P.empty)],
    "get_num_threads": [],
    "neuron_gradient": [("X", P.POSITIONAL_OR_KEYWORD, P.empty),
                        ("y", P.POSITIONAL_OR_KEYWORD, P.empty),
                        ("w", P.POSITIONAL_OR_KEYWORD, P.empty),
                        ("b", P.POSITIONAL_OR_KEYWORD, P.empty),
                        ("layout", P.KEYWORD_ONLY, "numerator"),
                        ("format", P.KEYWORD_ONLY, "compact"),
                        ("out", P.KEYWORD_ONLY, None),
                        ("return_loss", P.KEYWORD_ONLY, False)],
}
SIGNATURES["sum_gradient"] = (SIGNATURES["jacobian"][:4] + [("axis", P.KEYWORD_ONLY, None)]
                              + SIGNATURES["jacobian"][4:])


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_inspect_signature(name):
    signature = inspect.signature(getattr(fastjac, name))
    got = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
    assert got == SIGNATURES[name]


def test_signature_is_not_repeated_in_the_docstring():
    # help() prints the signature from __text_signature__; the docstring
    # itself starts with the summary line
    assert fastjac.jacobian.__doc__.startswith("Jacobian of the element-wise")
    assert "(op, a, b=None, *, wrt=0" in fastjac.jacobian.__text_signature__


# -- mypy ---------------------------------------------------------------------------

needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (pip install '.[test]')")


def run_mypy(tmp_path, *args):
    """``python -m <args>`` with mypy seeing the fastjac under test: an
    installed one through site-packages, an in-place build through MYPYPATH."""
    env = dict(os.environ)
    package_root = Path(fastjac.__file__).resolve().parent.parent
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if package_root not in site_dirs:
        env["MYPYPATH"] = str(package_root)
        # and stubtest imports that one (the subprocess runs elsewhere)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(package_root)] + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


MYPY = ("mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
        "--cache-dir", ".mypy_cache")

TYPED_USE = '''
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import fastjac


def main() -> None:
    a = np.linspace(0.5, 2.0, 16)
    b = np.linspace(-1.0, 1.0, 16)
    out = np.empty(16)

    # the core
    d: npt.NDArray[np.float64] = fastjac.jacobian("multiply", a, b, wrt=1, out=out)
    g = fastjac.sum_gradient(None, a, layout="denominator", format="dense")
    k = fastjac.kernel(np.tanh)
    assert_type(k, fastjac.Kernel)
    assert_type(k.wrt, int)
    r: npt.NDArray[np.float64] = k(a, out)
    assert_type(fastjac.set_num_threads(2), int)
    assert_type(fastjac.get_num_threads(), int)

    # compiled expressions
    x, w = fastjac.var("x"), fastjac.var("w")
    e = fastjac.sum(fastjac.tanh(w * x) + 3) / 2 - fastjac.dot(w, x) ** 2.0
    assert_type(e, fastjac.Expr)
    assert_type(-x + np.float32(1.5) * fastjac.maximum(x, 0), fastjac.Expr)
    f = fastjac.compile(e, wrt=["w"])
    assert_type(f, fastjac.CompiledExpression)
    assert_type(fastjac.compile([x * w, fastjac.sum(x)]), fastjac.CompiledExpression)
    assert_type(f.variables, tuple[str, ...])
    jw = f.jacobian("w", w=a, x=b)
    vw = f.value_and_jacobian("w", layout="numerator", format="csr", w=a, x=b)
    assert_type(vw, tuple[Any, Any])
    grad = f.gradient(w=a, x=b)
    ek = fastjac.compile(fastjac.tanh(x) * w).kernel("x", value=True)
    assert_type(ek, fastjac.ExprKernel)
    assert_type(ek.wrt, str)
    assert_type(ek.compiled, fastjac.CompiledExpression)
    r = ek(a, b, np.empty(16), out)

    # structured Jacobians
    fac = fastjac.Factor.diagonal(a) @ fastjac.Factor.column(b)
    assert_type(fac, fastjac.Factor)
    assert_type(fac.rank, int)
    assert_type(fac.shape, tuple[int, int])
    assert_type(fac.kind, Literal["scalar", "gradient", "by_scalar", "diagonal", "general"])
    dense: npt.NDArray[np.float64] = fac.toarray("denominator")

    # the neuron
    X = np.ones((4, 16))
    gw, gb = fastjac.neuron_gradient(X, np.zeros(4), a, 0.0)
    assert_type(gb, np.floating[Any])
    gw, gb, loss = fastjac.neuron_gradient(X, np.zeros(4), a, 0.0, return_loss=True)
    assert_type(loss, np.floating[Any])
'''

MISUSE = '''
import numpy as np

import fastjac

a = np.ones(3)
x = fastjac.var("x")
fastjac.jacobian("add", a, a, layout="rows")                         # line 8
fastjac.compile(x).jacobian("x", format="bsr", x=a)                  # line 9
fastjac.compile(x).kernel(0)                                         # line 10
fastjac.neuron_gradient(np.ones((2, 3)), a[:2], a, 0.0, out=[0.0])   # line 11
fastjac.var(1)                                                       # line 12
x + "1"                                                              # line 13
fastjac.Factor.diagonal(a).dot(None)                                 # line 14
'''


@needs_mypy
def test_mypy_accepts_typed_use_of_the_api(tmp_path):
    (tmp_path / "typed_use.py").write_text(textwrap.dedent(TYPED_USE))
    status, output = run_mypy(tmp_path, *MYPY, "typed_use.py")
    assert status == 0, output


@needs_mypy
def test_mypy_reports_misuse(tmp_path):
    (tmp_path / "misuse.py").write_text(MISUSE)
    status, output = run_mypy(tmp_path, *MYPY, "misuse.py")
    assert status == 1, output
    lines = {int(line.split(":")[1]) for line in output.splitlines()
             if line.startswith("misuse.py:") and ": error:" in line}
    assert lines == set(range(8, 15)), output


# Runtime names the stubs leave out: Cython's own, nothing of fastjac's
# (stubtest's allowlist, regexes).
STUBTEST_ALLOWLIST = r"""
# Cython's own module attributes: the doctest table and the C-API capsules
fastjac\.\w+\.__test__
fastjac\.\w+\.__pyx_capi__
"""


# stubtest's modules, and the _level modules of the levels this CPU runs: a
# level it lacks is left out, as importing its module may stop the process
# with SIGILL (_simd.py); test_level_stubs_are_one_stub covers it
STUBTEST_MODULES = ["fastjac._api", "fastjac._pool", "fastjac._kernels", "fastjac._expr",
                    "fastjac._neuron", "fastjac._broadcast_loops", "fastjac.expr",
                    "fastjac.expr_factors"]


@needs_mypy
def test_stubs_match_the_code(tmp_path):
    modules = STUBTEST_MODULES + [f"fastjac._level_{level}" for level in _simd.available()]
    (tmp_path / "allowlist.txt").write_text(STUBTEST_ALLOWLIST)
    status, output = run_mypy(tmp_path, "mypy.stubtest", *modules, "--allowlist",
                              "allowlist.txt")
    assert status == 0, output


def test_level_stubs_are_one_stub():
    # _level_baseline/_avx2/_avx512 are built from one _level.pxi, and
    # stubtest imports only the levels this CPU runs: one stub for all three
    # keeps the others checked too
    stubs = [Path(fastjac.__file__).with_name(f"_level_{level}.pyi").read_text()
             for level in _simd.LEVELS]
    assert stubs[1:] == stubs[:-1]


def test_every_compiled_module_has_a_checked_stub():
    from fastjac import _api
    compiled = {path.name.split(".")[0] for suffix in importlib.machinery.EXTENSION_SUFFIXES
                for path in Path(_api.__file__).parent.glob(f"*{suffix}")}
    stubs = Path(fastjac.__file__).parent
    checked = {name.rpartition(".")[2] for name in STUBTEST_MODULES}
    checked |= {f"_level_{level}" for level in _simd.LEVELS}
    assert sorted(m for m in compiled if not (stubs / f"{m}.pyi").is_file()) == []
    assert sorted(compiled - checked) == []
