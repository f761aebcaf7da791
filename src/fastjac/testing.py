"""Check a claimed derivative against central finite differences.

``check_jacobian(fun, jac, x)`` and ``check_gradient(fun, grad, x)`` raise
``AssertionError`` (as ``numpy.testing`` does) when the derivative that
``jac(x)`` (``grad(x)``) returns disagrees with finite differences of
``fun`` at ``x``, naming the worst direction or entry and its relative
error.

The default mode is a dot-product test in a few random directions v (as
``jax.test_util.check_grads`` does): the central difference
(fun(x + h v) - fun(x - h v)) / 2h against the claimed J v, and, when the
derivative can be transposed (a matrix, a sparse matrix, an operator or a
compact form), u . (J v) against (J^T u) . v for a random u. Each direction
costs two calls of ``fun`` and one product: no Jacobian is ever built, so
it works at n = 10^6. ``mode="full"`` compares every entry (2 n calls of
``fun``), for small n.
"""
import numpy as np

from . import _checks

__all__ = ["check_jacobian", "check_gradient"]

# The default relative tolerance of each dtype: a central difference with
# step eps^(1/3) is accurate to about eps^(2/3) times the function's
# curvature (4e-11 in float64, 2.4e-5 in float32), with room for curvature.
_RTOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 2e-3}
FULL_MAX = 4096       # mode="full" evaluates fun 2 n times: refused above this n


def check_jacobian(fun, jac, x, *, mode="directions", directions=3, layout="numerator",
                   step=None, rtol=None, atol=None, seed=0):
    """Assert that ``jac`` is the Jacobian of ``fun`` at ``x``.

    Parameters
    ----------
    fun : callable
        ``fun(x)`` returns an array_like y (any shape; flattened in C order,
        as x is: J is |y| x |x| in numerator layout).
    jac : callable or derivative
        ``jac(x)`` returns the claimed derivative (or pass the derivative
        itself). Accepted: a 2-D ndarray of the Jacobian (|y| x |x|, or
        |x| x |y| in denominator layout), a ``scipy.sparse`` matrix or array
        of the same shape, a ``scipy.sparse.linalg.LinearOperator`` (such as
        fastjac's ``format="operator"``) of that shape, or a compact array:
        an array of |x| elements when |y| = |x| is the **diagonal** of J
        (fastjac's compact Jacobian of an element-wise function); when x is
        a scalar, an array of |y| elements is the column dy/dx; when y is a
        scalar, an array of |x| elements is the gradient (a row).
    x : array_like of real numbers
        The point. float32 stays float32 (then ``fun`` is evaluated, and the
        tolerances chosen, in float32); integers and bool become float64.
    mode : {"directions", "full"}
        "directions" (default): the dot-product test in ``directions``
        random unit directions; "full": every entry of J, column by column
        (2 |x| calls of ``fun``; refused above 4096 elements).
    directions : int, default 3
        The number of random directions of the default mode.
    layout : {"numerator", "denominator"}
        How a 2-D, sparse or operator derivative is laid out: numerator is
        |y| x |x| (J[i, j] = dy_i/dx_j), denominator its transpose. Compact
        arrays mean the same in both layouts.
    step : float, optional
        The finite-difference step h along a unit direction; default
        eps^(1/3) * max(1, max|x|) (6e-6 in float64, 4.9e-3 in float32 for
        |x| <= 1).
    rtol : float, optional
        Default 1e-6 for float64 and 2e-3 for float32.
    atol : float, optional
        An absolute tolerance on ``|J v - fd|``; default the rounding noise
        of the finite difference itself, 10 eps (|fun(x)| + 1) / h.
    seed : int, default 0
        Seed of the random directions (the message repeats it).

    Raises
    ------
    AssertionError
        The derivative disagrees: the message names the direction (or, in
        full mode, the entry (i, j)) with the largest error, and its
        relative error |claimed - fd| / max(|claimed|, |fd|).
    ValueError
        Unknown ``mode`` or ``layout``, a derivative whose shape fits no
        accepted form (its shape and the expected ones are named),
        non-finite values of ``fun`` at x, or ``mode="full"`` for a large x.
    TypeError
        A complex or non-numeric ``x``.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> from fastjac.testing import check_jacobian
    >>> x = np.linspace(0.5, 2.0, 5)
    >>> check_jacobian(np.tanh, lambda x: fastjac.jacobian("tanh", x), x)
    >>> check_jacobian(np.tanh, lambda x: -fastjac.jacobian("tanh", x), x)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: check_jacobian: the claimed derivative disagrees ... relative error 2 ...
    """
    return _check(fun, jac, x, mode, directions, layout, step, rtol, atol, seed, False)


def check_gradient(fun, grad, x, *, mode="directions", directions=3, layout="numerator",
                   step=None, rtol=None, atol=None, seed=0):
    """Assert that ``grad`` is the gradient of the scalar function ``fun`` at ``x``.

    ``fun(x)`` returns one number. ``grad(x)`` (or ``grad`` itself) returns
    the claimed gradient: an array shaped like x, or of |x| elements
    (fastjac's compact gradient: a 1-D array is always the gradient here),
    a 1 x |x| row (|x| x 1 column in denominator layout) as an ndarray,
    a ``scipy.sparse`` matrix or a ``LinearOperator``. The other parameters,
    the tests and the errors are those of :func:`check_jacobian`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastjac.testing import check_gradient
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> check_gradient(lambda x: np.sum(x ** 3), lambda x: 3 * x ** 2, x)
    """
    return _check(fun, grad, x, mode, directions, layout, step, rtol, atol, seed, True)


# -- the checker ---------------------------------------------------------------

def _check(fun, jac, x, mode, directions, layout, step, rtol, atol, seed, gradient):
    what = "check_gradient" if gradient else "check_jacobian"
    if not (isinstance(mode, str) and mode in ("directions", "full")):
        raise ValueError(f"mode must be 'directions' or 'full', got {mode!r}")
    denominator = _checks.check_layout(layout)
    if mode == "directions" and (isinstance(directions, bool)
                                 or not isinstance(directions, (int, np.integer))
                                 or directions < 1):
        raise ValueError(f"directions must be a positive integer, got {directions!r}")
    x = _point(x)
    dtype = x.dtype
    eps = np.finfo(dtype).eps
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    y0 = _evaluate(fun, x, dtype, what, gradient)
    m, n = y0.size, x.size
    h = float(step) if step is not None else float(np.cbrt(eps)) * max(
        1.0, float(np.max(np.abs(x))) if n else 1.0)
    if not h > 0:
        raise ValueError(f"step must be positive, got {step!r}")
    rtol = _RTOL[dtype] if rtol is None else float(rtol)
    noise = 10 * eps * ((float(np.max(np.abs(y0))) if m else 0.0) + 1.0) / h
    atol = noise if atol is None else float(atol)
    # a LinearOperator is callable (op(v) is op @ v): it is the derivative itself
    is_value = isinstance(jac, np.ndarray) or hasattr(jac, "matvec") or hasattr(jac, "tocsr")
    claimed = jac(x) if callable(jac) and not is_value else jac
    forward, adjoint = _applier(claimed, m, n, x.shape, denominator, gradient, what)

    def central(v):
        up = _evaluate(fun, (x + h * v.reshape(x.shape)).astype(dtype, copy=False),
                       dtype, what, gradient)
        down = _evaluate(fun, (x - h * v.reshape(x.shape)).astype(dtype, copy=False),
                         dtype, what, gradient)
        return (up.astype(np.float64) - down.astype(np.float64)) / (2 * h)

    if mode == "full":
        return _full(central, forward, m, n, dtype, rtol, atol, what)
    rng = np.random.default_rng(seed)
    worst = None
    for k in range(int(directions)):
        v = rng.standard_normal(n)
        v /= max(np.linalg.norm(v), 1e-300)
        v = v.astype(dtype)
        fd = central(v)
        jv = np.asarray(forward(v), dtype=np.float64).reshape(-1)
        diff = np.linalg.norm(jv - fd)
        scale = max(np.linalg.norm(jv), np.linalg.norm(fd))
        rel = diff / scale if scale else 0.0
        failed = diff > atol + rtol * scale
        if failed and (worst is None or rel > worst[0]):
            i = int(np.argmax(np.abs(jv - fd)))
            worst = (rel, k, f"J v in direction {k} of {directions} (seed {seed}): relative "
                             f"error {rel:.3g} (|J v - fd| = {diff:.3g}, |fd| = "
                             f"{np.linalg.norm(fd):.3g}); its worst element {i}: claimed "
                             f"{jv[i]:.9g}, finite difference {fd[i]:.9g}")
        if adjoint is not None and not failed:
            # the dot-product test of the transpose: u . (J v) = (J^T u) . v
            u = rng.standard_normal(m)
            jtu = np.asarray(adjoint(u.astype(dtype)), dtype=np.float64).reshape(-1)
            left, right = float(u @ fd), float(jtu @ v.astype(np.float64))
            scale = np.linalg.norm(u) * max(np.linalg.norm(fd), np.linalg.norm(jtu))
            err = abs(left - right)
            rel = err / scale if scale else 0.0
            if err > atol * np.linalg.norm(u) + rtol * scale and (
                    worst is None or rel > worst[0]):
                worst = (rel, k, f"the transpose in direction {k} of {directions} (seed "
                                 f"{seed}): u . fd = {left:.9g} but (J^T u) . v = "
                                 f"{right:.9g}, relative error {rel:.3g}")
    if worst is not None:
        raise AssertionError(
            f"{what}: the claimed derivative disagrees with central finite differences of "
            f"fun (step {h:.3g}, rtol {rtol:.3g}, atol {atol:.3g}); worst: {worst[2]}")


def _full(central, forward, m, n, dtype, rtol, atol, what):
    if n > FULL_MAX:
        raise ValueError(f"mode='full' evaluates fun {2 * n} times for x of {n} elements; "
                         f"it is refused above {FULL_MAX} elements: use "
                         f"mode='directions'")
    fd = np.empty((m, n))
    claimed = np.empty((m, n))
    eye = np.zeros(n, dtype)
    for j in range(n):
        eye[j] = 1
        fd[:, j] = central(eye)
        claimed[:, j] = np.asarray(forward(eye), dtype=np.float64).reshape(-1)
        eye[j] = 0
    diff = np.abs(claimed - fd)
    scale = np.maximum(np.abs(claimed), np.abs(fd))
    bad = diff > atol + rtol * scale
    if bad.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0.0)
        rel = np.where(bad, rel, -1.0)          # the worst of the failing entries
        i, j = np.unravel_index(int(np.argmax(rel)), rel.shape)
        raise AssertionError(
            f"{what}: the claimed derivative disagrees with central finite differences of "
            f"fun in {int(bad.sum())} of {m * n} entries (rtol {rtol:.3g}, atol "
            f"{atol:.3g}); worst: entry ({i}, {j}) (numerator layout), claimed "
            f"{claimed[i, j]:.9g}, finite difference {fd[i, j]:.9g}, relative error "
            f"{rel[i, j]:.3g}")


def _point(x):
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.float64)
    if kind != "f":
        raise TypeError(f"x must be real numbers (float, integer or bool), got dtype "
                        f"{arr.dtype}")
    if arr.dtype not in _RTOL:
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    return arr


def _evaluate(fun, x, dtype, what, gradient):
    y = np.asarray(fun(x))
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{what}: fun returned dtype {y.dtype}; it must return real numbers")
    if gradient and y.size != 1:
        raise ValueError(f"check_gradient: fun must return one number, got shape {y.shape} "
                         f"(use check_jacobian for a vector function)")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{what}: fun returned non-finite values near x; check the "
                         f"derivative at a point where fun is finite")
    return y.reshape(-1)


def _applier(D, m, n, x_shape, denominator, gradient, what):
    """(forward, adjoint): v -> J v and u -> J^T u for the claimed derivative
    D (numerator J, m x n); adjoint is None where D cannot be transposed."""
    dense_shape = (n, m) if denominator else (m, n)
    if hasattr(D, "matvec") and hasattr(D, "rmatvec") and hasattr(D, "shape"):
        _expect_shape(D.shape, dense_shape, what, "operator", layout_note=True)
        if denominator:
            return (lambda v: D.rmatvec(v)), (lambda u: D.matvec(u))
        return (lambda v: D.matvec(v)), (lambda u: D.rmatvec(u))
    if hasattr(D, "tocsr") and hasattr(D, "shape"):            # scipy.sparse
        _expect_shape(D.shape, dense_shape, what, "sparse matrix", layout_note=True)
        M = D.T if denominator else D
        return (lambda v: M @ v), (lambda u: M.T @ u)
    arr = np.asarray(D)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: the claimed derivative has dtype {arr.dtype}; it must be "
                        f"real numbers")
    if arr.ndim == 2 and arr.shape == dense_shape:
        M = arr.T if denominator else arr
        return (lambda v: M @ v), (lambda u: M.T @ u)
    flat = arr.reshape(-1)
    if gradient or m == 1:
        if flat.size == n:                      # the gradient: a row
            return (lambda v: np.atleast_1d(flat @ v)), (lambda u: flat * u[0])
    elif flat.size == n == m:                    # compact diagonal
        return (lambda v: flat * v), (lambda u: flat * u)
    elif n == 1 and flat.size == m:              # compact column dy/dz
        return (lambda v: flat * v[0]), (lambda u: np.atleast_1d(flat @ u))
    forms = (f"a 1 x {n} row or {n} elements shaped like x" if gradient else
             f"a {dense_shape[0]} x {dense_shape[1]} matrix ({'denominator' if denominator else 'numerator'} layout)"
             + (f" or a diagonal of {n} elements" if m == n else "")
             + (f" or a column of {m} elements" if n == 1 else "")
             + (f" or a gradient of {n} elements" if m == 1 else ""))
    raise ValueError(f"{what}: the claimed derivative has shape {arr.shape}, which fits no "
                     f"form for fun's {m} outputs and x's {n} elements; expected {forms}")


def _expect_shape(shape, dense_shape, what, kind, layout_note):
    if tuple(shape) != dense_shape:
        raise ValueError(f"{what}: the claimed derivative is a {kind} of shape {tuple(shape)}, "
                         f"but the Jacobian is {dense_shape[0]} x {dense_shape[1]} in this "
                         f"layout (numerator: outputs x inputs; denominator: the transpose)")
