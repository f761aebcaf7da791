"""Losses over batches: the logistic loss's gradient, Hessian-vector product,
Hessian diagonal and dense Hessian with respect to the weights w of X @ w.

The loss is L(w) = mean(softplus(z) - y * z), z = X @ w, X of shape
(N, n), y in {0, 1}: scikit-learn's HalfBinomialLoss without intercept or
penalty. fastjac compiles it once (``fastjac.compile``) and reads X once
per call for each of:

* "value+grad": (L, dL/dw), ``value_and_jacobian("w")`` (allocating: from
  the second call of a signature it runs the resolved call, LossCall; with
  ``out=`` it takes the full path, analysis included, every time). Rivals: scikit-learn's
  ``LinearModelLoss(HalfBinomialLoss(), fit_intercept=False).loss_gradient``,
  ``jax.jit(jax.value_and_grad(f))``, PyTorch autograd
  (``torch.autograd.grad`` of the loss, w a leaf with requires_grad) and the
  hand-written NumPy formula (z = X @ w, value, X.T @ (sigmoid(z) - y) / N).
  Each of them reads X twice: X @ w, then X.T @ r.
* "hvp": d2L/dw2 v = X^T diag(p (1 - p)) X v / N, ``hvp("w", v)``. Rivals:
  scikit-learn's ``gradient_hessian_product`` twice over: route
  ``sklearn`` times only the returned ``hessp(v)`` (the setup -- gradient,
  the pointwise Hessian h and the N x n matrix h * X -- is made once,
  outside the timing, as Newton-CG amortises it over its inner
  iterations; hessp then reads X and h * X), route ``sklearn_setup`` times
  the setup and the product together (what one product costs from w);
  ``jax.jit`` of ``jax.jvp(jax.grad(f), (w,), (v,))``; PyTorch's
  ``torch.func.jvp(torch.func.grad(f), (w,), (v,))``; NumPy (X @ [w, v]
  in one product, then X.T @ (h * X v) / N).
* "value+grad+hdiag": (L, dL/dw, diagonal of d2L/dw2),
  ``value_gradient_hessian_diagonal``; rival: NumPy (h @ X**2 / N for the
  diagonal). The point is its time beside "value+grad" and beside the
  read-once reference: the diagonal costs no second pass.
* "dense Hessian": the n x n matrix X^T diag(h) X / N, ``hessian("w")``
  (per-row h in one pass, then a blocked BLAS product); rivals:
  scikit-learn's ``gradient_hessian`` (it also returns the gradient),
  ``jax.jit(jax.hessian(f))``, ``torch.func.hessian(f)`` (up to N n^2 =
  10^9: beyond, a call takes minutes), NumPy X.T @ (h[:, None] * X) / N.
  Compute-bound (2 N n^2 flops): no STREAM twin.

scikit-learn's pointwise loops run with ``n_threads=1``, as
LogisticRegression calls them; its BLAS products use every core.

Sizes: the run's ``n`` is the number of rows N (capped at 10^6, the case's
``n`` staying the size asked for, as the expr family's neuron); each N is
run with n = 10 and n = 100 features, except N = 16, which is the per-call
case: every kernel at 16 x 10 (compiled-loss call overhead). The figures of
record use ``--sizes 16,1000,10000,100000,1000000``.

The read-once reference: at N >= 10^5 (``_harness.STREAM_MIN_N``), the
memory-bound cases' STREAM twin is the parallel read of as many bytes as X
and y (reads 1, writes 0, as the neuron's), timed beside fastjac.

Every rival's answer (value and gradient together, or the product, or the
matrix) is checked against fastjac's before it is timed: 1e-8 relative in
float64, 1e-3 in float32 (``Case.rtol``; see ``_harness.check``). Data:
rows of X standard normal, y drawn from the logistic model of a w_true
of norm about 1, and w = w_true / 2, so that the gradient is not small.
"""
import numpy as np

from ._harness import Case, Rival, Skip
from ._rivals import load

FAMILY = "loss"
DESCRIPTION = ("losses over batches: logistic loss value+gradient, Hessian-vector product, "
               "Hessian diagonal and dense Hessian wrt w of X @ w")

MAX_ROWS = 1_000_000
# scikit-learn's pointwise loss loops (OpenMP): one thread, as LogisticRegression
# calls LinearModelLoss (its BLAS products X @ w and X.T @ r use every core).
# Two threads were no faster at N = 10^6 here, and 5x slower at N = 16 (the
# second thread's wake-up on a shared 2-vCPU VM).
SKLEARN_THREADS = 1
# torch.func.hessian (forward over reverse) takes minutes a call at N = 10^6 x 100
TORCH_DENSE_MAX = 10**9     # N * n^2
FEATURES = (10, 100)
CALL_SHAPE = (16, 10)       # the per-call case at the run's n = 16
QUICK = {"value+grad", "hvp"}          # at 10 features
RTOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-3}

_DATA = {}


def data(N, n, dtype):
    """(X, y, w, v) of the logistic model, made once per (N, n, dtype)."""
    key = (N, n, np.dtype(dtype).str)
    if key not in _DATA:
        if any(k[0] != N or k[2] != key[2] for k in _DATA):
            _DATA.clear()                       # keep one N and dtype in memory at a time
        rng = np.random.default_rng(20262 + n)
        X = rng.standard_normal((N, n), dtype=np.dtype(dtype).type)
        w_true = rng.standard_normal(n) / np.sqrt(n)
        z = X @ w_true.astype(dtype)
        y = (rng.random(N) < 1.0 / (1.0 + np.exp(-z))).astype(dtype)
        w = (0.5 * w_true).astype(dtype)
        v = rng.standard_normal(n).astype(dtype)
        _DATA[key] = (X, y, w, v)
    return _DATA[key]


def _compiled():
    import fastjac as fj

    X, w, y = fj.var("X"), fj.var("w"), fj.var("y")
    z = X @ w
    return fj.compile(fj.mean(fj.softplus(z) - y * z), wrt="w")


# -- rivals ------------------------------------------------------------------------------

def _sklearn():
    load("sklearn")
    from sklearn._loss.loss import HalfBinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss
    return LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=False)


def _jax_loss():
    jx = load("jax")
    jnp = jx.numpy

    # X and y are arguments, not constants closed over: jit would embed them
    def f(w, X, y):
        z = X @ w
        return jnp.mean(jx.nn.softplus(z) - y * z)
    return jx, f


def _torch_loss(X, y):
    th = load("torch")
    Xt, yt = th.from_numpy(X), th.from_numpy(y)
    softplus = th.nn.functional.softplus     # threshold 20: |z| stays far below here

    def f(w):
        z = Xt @ w
        return th.mean(softplus(z) - yt * z)
    return th, f


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_value(z, y):
    return np.mean(np.logaddexp(0, z) - y * z)


# -- the cases -------------------------------------------------------------------------------

def _case(kind_name, N, n, dtype, run_n, fastjac, fastjac_alloc, rivals, kind, twin):
    X, y, _, _ = data(N, n, dtype)
    quick = kind_name in QUICK and n == FEATURES[0]
    return Case(family=FAMILY, name=f"{kind_name}, N={N:,} x {n}", kind=kind, n=run_n,
                dtype=np.dtype(dtype), nbytes=X.nbytes + y.nbytes, fastjac=fastjac,
                fastjac_alloc=fastjac_alloc, rivals=rivals, quick=quick,
                reads=1 if twin else 0, writes=0, rtol=RTOL[np.dtype(dtype)])


def value_grad_case(N, n, dtype, run_n):
    X, y, w, _ = data(N, n, dtype)
    loss = _compiled()

    def fastjac():
        return loss.value_and_jacobian("w", X=X, w=w, y=y)

    def numpy():
        def fn():
            z = X @ w
            return _np_value(z, y), X.T @ (_sigmoid(z) - y) / N
        return fn

    def sklearn():
        lml = _sklearn()
        return lambda: lml.loss_gradient(w, X, y, l2_reg_strength=0.0, n_threads=SKLEARN_THREADS)

    def jax():
        jx, f = _jax_loss()
        vg = jx.jit(jx.value_and_grad(f))
        Xj, yj, wj = jx.device_put(X), jx.device_put(y), jx.device_put(w)

        def fn():
            value, grad = vg(wj, Xj, yj)
            return value.block_until_ready(), grad.block_until_ready()
        return fn

    def torch():
        th, f = _torch_loss(X, y)
        leaf = th.from_numpy(w.copy()).requires_grad_(True)

        def fn():
            value = f(leaf)
            (grad,) = th.autograd.grad(value, leaf)
            return value.detach(), grad
        return fn

    rivals = [Rival("numpy", numpy), Rival("sklearn", sklearn), Rival("jax", jax),
              Rival("torch", torch)]
    return _case("value+grad", N, n, dtype, run_n, fastjac, None, rivals, "memory", True)


def hvp_case(N, n, dtype, run_n):
    X, y, w, v = data(N, n, dtype)
    loss = _compiled()

    def fastjac():
        return loss.hvp("w", v, X=X, w=w, y=y)

    def numpy():
        W = np.ascontiguousarray(np.stack([w, v], axis=1))

        def fn():
            Z = X @ W                           # X @ w and X @ v in one read of X
            p = _sigmoid(Z[:, 0])
            return X.T @ (p * (1 - p) * Z[:, 1]) / N
        return fn

    def sklearn():
        lml = _sklearn()
        _, hessp = lml.gradient_hessian_product(w, X, y, n_threads=SKLEARN_THREADS)
        return lambda: hessp(v)

    def sklearn_setup():
        lml = _sklearn()

        def fn():
            _, hessp = lml.gradient_hessian_product(w, X, y, n_threads=SKLEARN_THREADS)
            return hessp(v)
        return fn

    def jax():
        jx, f = _jax_loss()
        grad = jx.grad(f)
        hvp = jx.jit(lambda w_, v_, X_, y_: jx.jvp(lambda u: grad(u, X_, y_), (w_,), (v_,))[1])
        Xj, yj, wj, vj = (jx.device_put(a) for a in (X, y, w, v))
        return lambda: hvp(wj, vj, Xj, yj).block_until_ready()

    def torch():
        th, f = _torch_loss(X, y)
        from torch.func import grad, jvp
        wt, vt = th.from_numpy(w), th.from_numpy(v)
        g = grad(f)
        return lambda: jvp(g, (wt,), (vt,))[1]

    rivals = [Rival("numpy", numpy), Rival("sklearn", sklearn),
              Rival("sklearn_setup", sklearn_setup), Rival("jax", jax), Rival("torch", torch)]
    return _case("hvp", N, n, dtype, run_n, fastjac, None, rivals, "memory", True)


def hdiag_case(N, n, dtype, run_n):
    X, y, w, _ = data(N, n, dtype)
    loss = _compiled()

    def fastjac():
        return loss.value_gradient_hessian_diagonal("w", X=X, w=w, y=y)

    def numpy():
        def fn():
            z = X @ w
            p = _sigmoid(z)
            return (_np_value(z, y), X.T @ (p - y) / N, (p * (1 - p)) @ np.square(X) / N)
        return fn

    return _case("value+grad+hdiag", N, n, dtype, run_n, fastjac, None,
                 [Rival("numpy", numpy)], "memory", True)


def dense_case(N, n, dtype, run_n):
    X, y, w, _ = data(N, n, dtype)
    loss = _compiled()

    def fastjac():
        return loss.hessian("w", X=X, w=w, y=y)

    def numpy():
        def fn():
            p = _sigmoid(X @ w)
            return X.T @ ((p * (1 - p))[:, None] * X) / N
        return fn

    def sklearn():
        lml = _sklearn()

        def fn():
            _, hess, _ = lml.gradient_hessian(w, X, y, n_threads=SKLEARN_THREADS)
            return hess
        return fn

    def jax():
        jx, f = _jax_loss()
        hess = jx.jit(jx.hessian(f))
        Xj, yj, wj = jx.device_put(X), jx.device_put(y), jx.device_put(w)
        return lambda: hess(wj, Xj, yj).block_until_ready()

    def torch():
        if N * n * n > TORCH_DENSE_MAX:
            raise Skip(f"not timed above N n^2 = {TORCH_DENSE_MAX:.0e}: torch.func.hessian "
                       f"takes over a minute per call at N = 10^6, n = 100")
        th, f = _torch_loss(X, y)
        from torch.func import hessian
        wt = th.from_numpy(w)
        h = hessian(f)
        return lambda: h(wt)

    rivals = [Rival("numpy", numpy), Rival("sklearn", sklearn), Rival("jax", jax),
              Rival("torch", torch)]
    return _case("dense Hessian", N, n, dtype, run_n, fastjac, None, rivals, "compute", False)


KINDS = (value_grad_case, hvp_case, hdiag_case, dense_case)


def cases(n, dtype):
    dtype = np.dtype(dtype)
    if n <= CALL_SHAPE[0]:
        shapes = [(n, CALL_SHAPE[1])]
    else:
        N = min(n, MAX_ROWS)
        shapes = [(N, k) for k in FEATURES]
    return [make(N, k, dtype, n) for N, k in shapes for make in KINDS]
