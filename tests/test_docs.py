"""The examples in the README and in the public docstrings run as written."""
import doctest
import pathlib

import numpy as np
import pytest

import fastjac

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("function", [fastjac.jacobian, fastjac.sum_gradient, fastjac.kernel])
def test_docstring_examples(function):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(function, function.__name__, globs={"np": np, "fastjac": fastjac})
    assert sum(len(t.examples) for t in tests) > 0, "no examples found"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_readme_examples():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not DOCS, reason="docs/ not next to the tests")
@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_docs_examples(page):
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
