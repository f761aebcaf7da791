"""The examples in the README and in the public docstrings run as written."""
import doctest
import pathlib
import re

import numpy as np
import pytest

import fastjac

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("function", [fastjac.jacobian, fastjac.sum_gradient, fastjac.kernel,
                                      fastjac.testing.check_jacobian,
                                      fastjac.testing.check_gradient])
def test_docstring_examples(function):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(function, function.__name__, globs={"np": np, "fastjac": fastjac})
    assert sum(len(t.examples) for t in tests) > 0, "no examples found"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


def test_operator_function_examples():
    # fastjac.softplus, fastjac.logaddexp, ...: made from the operator records,
    # so doctest's module search does not see their examples; run them here
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for name in fastjac._nodes.OPERATOR_FUNCTIONS:
        for test in finder.find(getattr(fastjac, name), name,
                                globs={"np": np, "fastjac": fastjac}):
            examples += len(test.examples)
            runner.run(test)
    assert examples > 0, "no examples found"
    assert runner.failures == 0


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_readme_examples():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not DOCS, reason="docs/ not next to the tests")
@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_docs_examples(page):
    if page.name == "dask.md":          # its examples build Dask arrays (a test extra)
        pytest.importorskip("dask.array")
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_readme_power_convention_says_where_jax_differs():
    """d(a^b)/da at b = 0: fastjac (like PyTorch's masked backward) gives 0
    for every a; JAX's b * a**(b - 1) gives 0 * inf = NaN at a = 0 and NaN
    at a = NaN. The README must not claim JAX agrees there."""
    a = np.array([0.0, -0.0, np.nan, np.inf, -2.0, 3.0])
    np.testing.assert_array_equal(fastjac.jacobian("power", a, 0.0), np.zeros(6))
    with np.errstate(divide="ignore", invalid="ignore"):
        jax_formula = 0.0 * a ** (0.0 - 1.0)
    np.testing.assert_array_equal(np.isnan(jax_formula), [True, True, True, False, False, False])
    row = next(line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("| `power`, ∂(a^b)/∂a where b == 0"))
    agrees_with = row.split("|")[3]
    assert "PyTorch" in agrees_with
    if "JAX" in agrees_with:
        assert "0" in agrees_with and "NaN" in agrees_with, row


def readme_section(start, stop):
    text = README.read_text(encoding="utf-8")
    return text[text.index(start):text.index(stop, text.index(start))]


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_readme_quick_start_names_every_test_extra():
    pyproject = (README.parent / "pyproject.toml").read_text(encoding="utf-8")
    extra = re.search(r"^test = \[(.*?)\]", pyproject, re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.-]+?)[<>=!~\["]', extra)
    assert "mpmath" in names
    quick_start = readme_section("## Quick start", "## API").lower()
    for name in names:
        assert name.lower() in quick_start, name


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_readme_says_non_contiguous_operands_are_copied():
    api = readme_section("## API", "### What comes back")
    for words in ("C-contiguous", "x[::2]", "Fortran-ordered", "copied", "n = 10⁶",
                  "`fastjac.kernel` and `ExprKernel` refuse"):
        assert words in api, words
    # what it says: the same numbers, shaped like the operand; kernels refuse
    base = np.random.default_rng(3).uniform(0.5, 2.0, (40, 30))
    for x in (base[::2, ::3], np.asfortranarray(base), base.T, base.astype(">f8")):
        got = fastjac.jacobian("log", x)
        assert got.shape == x.shape and not np.shares_memory(got, x)
        np.testing.assert_allclose(got, 1 / x.astype(float), rtol=1e-15)
        compiled = fastjac.compile(fastjac.log(fastjac.var("x"))).jacobian(x=x)
        np.testing.assert_allclose(compiled, 1 / x.astype(float), rtol=1e-15)
    strided = base[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        fastjac.kernel("log")(strided, np.empty(strided.shape))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastjac.compile(fastjac.log(fastjac.var("x"))).kernel("x")(strided,
                                                                    np.empty(strided.shape))
