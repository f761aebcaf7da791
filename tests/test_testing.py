"""fastjac.testing: the checker passes right derivatives in every accepted
form and fails wrong ones (a checker that cannot fail is a defect)."""
import numpy as np
import pytest

import fastjac
from fastjac.testing import check_gradient, check_jacobian

RNG = np.random.default_rng(7)


def x_of(n, dtype=np.float64):
    return RNG.uniform(0.3, 1.5, n).astype(dtype)


def sech2(x):
    return 1 / np.cosh(x) ** 2


# f(t) = tanh(t * sum(t)): J = diag(s sech2) + (t sech2) 1^T, s = sum(t)
def coupled(t):
    return np.tanh(t * t.sum())


def coupled_dense(t):
    s = t.sum()
    d = sech2(t * s)
    return np.diag(d * s) + np.outer(d * t, np.ones_like(t))


# -- right derivatives pass ------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["directions", "full"])
def test_right_derivatives_pass_in_every_form(dtype, mode):
    x = x_of(6, dtype)
    kw = dict(mode=mode)
    check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x), x, **kw)      # compact
    check_jacobian(np.tanh, lambda x: np.diag(sech2(x)), x, **kw)                 # dense
    check_jacobian(np.tanh, np.diag(sech2(x)), x, layout="denominator", **kw)     # a value
    check_jacobian(coupled, coupled_dense, x, **kw)
    check_jacobian(coupled, lambda x: coupled_dense(x).T, x, layout="denominator", **kw)
    check_jacobian(lambda z: x * z, x, dtype(1.7), **kw)                        # column
    check_gradient(lambda x: np.sum(x ** 3), lambda x: 3 * x ** 2, x, **kw)
    check_gradient(lambda x: np.sum(x ** 3), lambda x: (3 * x ** 2)[None, :], x, **kw)
    check_gradient(lambda x: np.sum(x ** 3), lambda x: (3 * x ** 2)[:, None], x,
                   layout="denominator", **kw)
    X = x.reshape(2, 3)
    check_gradient(lambda X: np.sum(np.sin(X)), np.cos, X, **kw)                # shaped like x
    check_jacobian(np.sin, np.cos, X, **kw)                                       # 2-D compact


def test_sparse_and_operator_forms_pass():
    pytest.importorskip("scipy")
    x = x_of(8)
    for layout in ("numerator", "denominator"):
        for fmt in ("csr", "operator"):
            check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x, format=fmt,
                                                               layout=layout),
                           x, layout=layout)
            check_gradient(lambda x: np.sum(np.exp(x)),
                           lambda x: fastjac.sum_gradient("exp", x, format=fmt,
                                                          layout=layout),
                           x, layout=layout)
    # a broadcast Jacobian (operator), and an expression's diag + low rank
    w, X = x_of(4), x_of(12).reshape(3, 4)
    check_jacobian(lambda w: w * X, lambda w: fastjac.jacobian("multiply", w, X,
                                                               format="operator"), w)
    t = fastjac.var("t")
    f = fastjac.compile(fastjac.tanh(t * fastjac.sum(t)))
    check_jacobian(coupled, lambda x: f.jacobian("t", t=x, format="operator"), x, mode="full")


def test_a_million_elements_without_a_dense_jacobian():
    x = x_of(1_000_000)
    check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x), x, directions=2)
    with pytest.raises(AssertionError):
        check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x) * (1 + 1e-3), x,
                       directions=2)


# -- wrong derivatives fail -----------------------------------------------------------

WRONG = {
    "sign flip": (np.tanh, lambda x: -sech2(x)),
    "off-by-one diagonal": (np.tanh, lambda x: np.roll(sech2(x), 1)),
    "wrong scale": (np.tanh, lambda x: 1.001 * sech2(x)),
    "missing off-diagonal term": (coupled, lambda x: sech2(x * x.sum()) * x.sum()),
    "off-diagonal term transposed": (coupled, lambda x: coupled_dense(x).T),
    "one entry wrong": (coupled, lambda x: coupled_dense(x) + np.eye(len(x), k=2)[0] * 0
                        + np.pad([[0.01]], ((0, len(x) - 1), (3, len(x) - 4)))),
}


@pytest.mark.parametrize("mode", ["directions", "full"])
@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_derivatives_fail(name, mode):
    fun, jac = WRONG[name]
    x = x_of(7)
    with pytest.raises(AssertionError, match="relative error") as info:
        check_jacobian(fun, jac, x, mode=mode)
    message = str(info.value)
    assert ("direction" in message) if mode == "directions" else ("entry (" in message)


def test_full_mode_names_the_worst_entry():
    x = x_of(5)

    def jac(x):
        J = np.diag(sech2(x))
        J[3, 1] = 0.25                      # a wrong off-diagonal entry
        return J
    with pytest.raises(AssertionError, match=r"entry \(3, 1\).*claimed 0.25"):
        check_jacobian(np.tanh, jac, x, mode="full")


def test_wrong_float32_scale_fails_and_wrong_gradient_fails():
    x = x_of(50, np.float32)
    check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x), x)
    with pytest.raises(AssertionError):
        check_jacobian(np.tanh, lambda x: 1.02 * fastjac.jacobian("tanh", x), x)
    xs = x_of(9)
    with pytest.raises(AssertionError, match="relative error"):
        check_gradient(lambda x: np.sum(x ** 3), lambda x: 3 * x, xs)
    with pytest.raises(AssertionError):
        check_gradient(lambda x: np.sum(x ** 3), lambda x: np.roll(3 * x ** 2, 1), xs)


def test_a_wrong_transpose_of_an_operator_fails():
    LinearOperator = pytest.importorskip("scipy.sparse.linalg").LinearOperator
    x = x_of(6)
    D = coupled_dense(x)
    right = LinearOperator(D.shape, matvec=lambda v: D @ v, rmatvec=lambda u: D.T @ u)
    check_jacobian(coupled, right, x)
    wrong = LinearOperator(D.shape, matvec=lambda v: D @ v, rmatvec=lambda u: D @ u)
    with pytest.raises(AssertionError, match="transpose"):
        check_jacobian(coupled, wrong, x)


# -- misuse -----------------------------------------------------------------------------

def test_errors():
    x = x_of(4)
    good = lambda x: sech2(x)                               # noqa: E731
    with pytest.raises(ValueError, match="mode must be"):
        check_jacobian(np.tanh, good, x, mode="fast")
    with pytest.raises(ValueError, match="layout must be"):
        check_jacobian(np.tanh, good, x, layout="row")
    with pytest.raises(ValueError, match="directions must be a positive integer"):
        check_jacobian(np.tanh, good, x, directions=0)
    with pytest.raises(TypeError, match="complex"):
        check_jacobian(np.tanh, good, x + 1j)
    with pytest.raises(TypeError, match="callable"):
        check_jacobian(3, good, x)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        check_jacobian(np.tanh, lambda x: np.ones(5), x)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        check_jacobian(np.tanh, lambda x: np.ones((3, 4)), x)
    with pytest.raises(ValueError, match="non-finite"), np.errstate(divide="ignore"):
        check_jacobian(np.log, lambda x: 1 / x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="one number"):
        check_gradient(np.tanh, good, x)
    with pytest.raises(ValueError, match="refused above 4096"):
        check_jacobian(np.tanh, good, x_of(5000), mode="full")
    with pytest.raises(ValueError, match="step must be positive"):
        check_jacobian(np.tanh, good, x, step=0.0)
    pytest.importorskip("scipy")
    op = fastjac.jacobian("tanh", x_of(3), format="operator")
    with pytest.raises(ValueError, match="operator of shape"):
        check_jacobian(np.tanh, op, x)


def test_import_is_lazy_and_documented_in_the_namespace():
    import subprocess
    import sys
    code = ("import sys, fastjac; print('fastjac.testing' in sys.modules); "
            "fastjac.testing.check_gradient(lambda x: (x**2).sum(), lambda x: 2*x, [1.0]); "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
