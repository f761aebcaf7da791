"""What a new user trips on (issue 19): each test fails without its fix.

Oracles are closed forms and NumPy, written here.
"""
import builtins
import inspect

import numpy as np
import pytest

import fastjac
import fastjac as fj
from fastjac.expr_factors import Factor

RNG = np.random.default_rng(19)


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


# -- `from fastjac import *` leaves Python's builtins alone -------------------------------

@pytest.mark.parametrize("module", ["fastjac", "fastjac.expr"])
def test_star_import_keeps_builtins(module):
    namespace = {}
    exec(f"from {module} import *", namespace)
    shadowing = sorted(name for name in namespace
                       if name != "__builtins__" and hasattr(builtins, name))
    assert shadowing == []
    assert eval("sum([1, 2, 3])", namespace) == 6
    assert eval("abs(-3)", namespace) == 3
    code = eval('compile("1+1", "<s>", "eval")', namespace)
    assert eval(code) == 2
    assert "var" in namespace and "tanh" in namespace      # the rest is still exported


def test_shadowing_names_stay_reachable_as_attributes():
    x = fj.var("x")
    xv = np.array([-2.0, 0.5, 3.0])
    f = fj.compile(fj.sum(fj.abs(x) * 3))
    np.testing.assert_array_equal(f.jacobian(x=xv), 3 * np.sign(xv))
    assert fastjac.compile is fastjac.expr.compile


def test_builtin_abs_of_an_expression():
    x = fj.var("x")
    xv = np.array([-2.0, -0.5, 0.25, 3.0])
    f = fj.compile(abs(x) * x)                       # d(|x| x)/dx = 2|x|
    np.testing.assert_allclose(f.value(x=xv), np.abs(xv) * xv, rtol=1e-15)
    np.testing.assert_allclose(f.jacobian(x=xv), 2 * np.abs(xv), rtol=1e-15)


@pytest.mark.parametrize("module", [fastjac, fastjac.expr])
def test_missing_function_names_the_available_ones(module):
    with pytest.raises(AttributeError, match=r"has no attribute 'erf'; the functions of "
                                              r"fastjac expressions are.*tanh.*maximum.*dot"):
        module.erf
    assert not hasattr(module, "erf")
    with pytest.raises(AttributeError, match=r"has no attribute '__wrapped__'$"):
        module.__wrapped__
