"""Jacobians as operators (format="operator"): products and solves.

``J @ v`` for the diagonal, broadcast and row structures, and ``J^T @ u``
for the broadcast one (a sum over the batch), beside the STREAM kernel that
moves the same bytes; SciPy's CSR matrix of the same Jacobian (``scipy``)
and NumPy's hand-written product (``numpy``, ``numpy_out``) as rivals.
Then a fixed number of iterations of ``scipy.sparse.linalg.lsqr`` and
``cg`` with the fastjac operator (the ``fastjac`` routes) against the same
solve with the CSR matrix (``scipy``): the iterates are the same numbers,
so the time is the products' and the solver's own work.

The operators are built once per case (outside the timing): what is timed
is the product a solver makes at every iteration.
"""
import numpy as np

from ._harness import Case, Rival, Skip, data, nbytes_for

FAMILY = "operator"
DESCRIPTION = ("format='operator': J @ v and J^T @ u of structured Jacobians, and "
               "lsqr / cg iterations, against SciPy's CSR matrix")

QUICK = {"J @ v diagonal", "J @ v row"}
WIDTH = 16                  # the broadcast case: a parameter of 16 shared by n / 16 rows
ITERATIONS = 10             # solver iterations per call (tolerances 0: always all of them)
SOLVE_MAX_N = 1_000_000     # solves above this take seconds per call


def _scipy_rival(build_matrix, use):
    """A Rival timing ``use(M)`` with M the CSR matrix ``build_matrix()``."""
    def build():
        try:
            import scipy.sparse  # noqa: F401
        except ImportError:
            raise Skip("SciPy is not installed") from None
        M = build_matrix()
        return lambda: use(M)
    return Rival("scipy", build)


def _numpy_rivals(alloc, into):
    rivals = [Rival("numpy", lambda: alloc)]
    if into is not None:
        rivals.append(Rival("numpy_out", lambda: into))
    return rivals


def _product_case(name, J, v, out, reads, writes, nbytes, alloc, into, csr_of, kind="memory"):
    return Case(
        family=FAMILY, name=name, kind=kind, n=max(J.shape), dtype=J.dtype,
        nbytes=nbytes, reads=reads, writes=writes,
        fastjac=lambda: J.matvec(v, out=out), fastjac_alloc=lambda: J @ v,
        rivals=_numpy_rivals(alloc, into) + [_scipy_rival(csr_of, lambda M: M @ v)],
        quick=name in QUICK)


def cases(n, dtype):
    try:
        import fastjac
        import scipy.sparse.linalg  # noqa: F401
    except ImportError:
        return []
    d = data(n, dtype)
    w, x, s = d["w"], d["x"], d["s"]
    out = []

    # diagonal: J = diag(x), v = s: reads x and s, writes J v (a triad's bytes)
    D = fastjac.jacobian("multiply", w, x, format="operator")
    o1 = np.empty(n, dtype)
    out.append(_product_case(
        "J @ v diagonal", D, s, np.empty(n, dtype), 2, 1, nbytes_for(n, dtype, 2, 1),
        lambda: x * s, lambda: np.multiply(x, s, out=o1), D.tosparse))

    # broadcast: y = w * X with w of WIDTH shared by the rows of X (n elements):
    # J @ v = X * v, reads X, writes y (a copy's bytes; v is 16 numbers)
    width = min(WIDTH, n)
    rows = n // width
    X = x[:rows * width].reshape(rows, width)
    B = fastjac.jacobian("multiply", w[:width], X, format="operator")
    vb = s[:width].copy()
    o2 = np.empty(rows * width, dtype)
    out.append(_product_case(
        "J @ v broadcast", B, vb, np.empty(rows * width, dtype), 1, 1,
        nbytes_for(rows * width, dtype, 1, 1),
        lambda: (X * vb).reshape(-1), lambda: np.multiply(X, vb, out=o2.reshape(rows, width)),
        B.tosparse))

    # row: the gradient of sum(w * x) by w is x, 1 x n; J @ v = x . s reads two
    # arrays and writes one number (the twin reads one array of 2 n)
    G = fastjac.sum_gradient("multiply", w, x, format="operator")
    out.append(_product_case(
        "J @ v row", G, s, np.empty(1, dtype), 1, 0, nbytes_for(n, dtype, 2, 0),
        lambda: np.atleast_1d(np.dot(x, s)), None, G.tosparse))

    # the broadcast's transpose: J^T u sums X * u over the rows (einsum, one pass)
    u = s[:rows * width].copy()
    U = u.reshape(rows, width)
    BT = B.T
    out.append(_product_case(
        "J^T @ u broadcast", BT, u, np.empty(width, dtype), 1, 0,
        nbytes_for(rows * width, dtype, 2, 0),
        lambda: np.einsum("rc,rc->c", X, U), None, BT.tosparse))

    if n <= SOLVE_MAX_N:
        out += _solver_cases(n, dtype, D, B, s, X)
    return out


def _solver_cases(n, dtype, D, B, s, X):
    from scipy.sparse.linalg import cg, lsqr

    rows, width = X.shape
    y = s[:rows * width].astype(np.float64)
    b = s.astype(np.float64)

    def lsqr_of(A):
        return lambda: lsqr(A, y, atol=0.0, btol=0.0, conlim=0.0, iter_lim=ITERATIONS)[0]

    def cg_of(A):
        return lambda: cg(A, b, rtol=0.0, atol=0.0, maxiter=ITERATIONS)[0]

    def solver(name, op, run):
        def build():
            return run(op.tosparse("csr"))
        # no bandwidth bound is claimed: the solver's own vector work adds to
        # the products' (nbytes 0: no STREAM twin)
        return Case(family=FAMILY, name=name, kind="memory", n=n, dtype=op.dtype,
                    nbytes=0, fastjac=run(op),
                    rivals=[Rival("scipy", build)], quick=False, rtol=1e-6)
    return [solver(f"lsqr x{ITERATIONS} broadcast", B, lsqr_of),
            solver(f"cg x{ITERATIONS} diagonal", D, cg_of)]
