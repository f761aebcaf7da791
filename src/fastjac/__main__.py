"""``python -m fastjac``: the worked examples of the specification, computed.

Each section of ../shared/docs/matrix-calculus.md on a small vector, in both
layouts, compact, dense and (when SciPy is installed) sparse.
"""
import numpy as np

import fastjac

np.set_printoptions(precision=4, suppress=True)


def show(title, value):
    text = str(value) if np.isscalar(value) else np.array2string(np.asarray(value))
    if "\n" in text:
        print(f"  {title}:")
        print("    " + text.replace("\n", "\n    "))
    else:
        print(f"  {title}: {text}")


def sparse_summary(matrix):
    return f"{type(matrix).__name__} of shape {matrix.shape} with {matrix.nnz} stored entries"


def section(title):
    print()
    print(title)
    print("-" * len(title))


def main():
    w = np.array([1.0, 5.0, 3.0])
    x = np.array([4.0, 2.0, 3.0])     # x[2] == w[2]: a tie for maximum/minimum
    u = np.array([-1.0, 0.0, 0.5, 2.0])
    z = 2.0
    try:
        import scipy.sparse  # noqa: F401  (only to decide whether to show sparse output)
        have_scipy = True
    except ImportError:
        have_scipy = False

    print(f"fastjac {fastjac.__version__}: structured Jacobians, never a dense n x n "
          f"matrix unless asked")
    print(f"w = {w}, x = {x}, z = {z}")

    section("1. Layouts: numerator J[i, j] = dy_i/dx_j, denominator its transpose")
    show("d(w * z)/dz, numerator (3x1 column)", fastjac.jacobian("multiply", w, z, wrt=1,
                                                                format="dense"))
    show("d(w * z)/dz, denominator (1x3 row)", fastjac.jacobian(
        "multiply", w, z, wrt=1, format="dense", layout="denominator"))
    show("d sum(w)/dw, numerator (1x3 row)", fastjac.sum_gradient(None, w, format="dense"))
    show("d sum(w)/dw, denominator (3x1 column)", fastjac.sum_gradient(
        None, w, format="dense", layout="denominator"))
    X = np.arange(6.0).reshape(2, 3)
    show("d sum(X)/dX for X 2x3, numerator (3x2)", fastjac.sum_gradient(None, X, format="dense"))
    show("d (X * z)/dz for X 2x3, numerator (2x3)", fastjac.jacobian(
        "multiply", X, z, wrt=1, format="dense"))
    show("identity f(x) = x: Jacobian I", fastjac.jacobian("identity", x, format="dense"))

    section("2. Element-wise binary operators y = w o x: diagonal Jacobians")
    for op in fastjac.BINARY_OPS:
        show(f"{op:>9}  diag dy/dw", fastjac.jacobian(op, w, x, wrt=0))
        show(f"{op:>9}  diag dy/dx", fastjac.jacobian(op, w, x, wrt=1))
    print("  (at the tie w = x = 3, maximum and minimum give 0.5 to each operand)")
    show("d(w * x)/dw dense (diag(x))", fastjac.jacobian("multiply", w, x, format="dense"))
    if have_scipy:
        show("d(w * x)/dw as CSR", sparse_summary(fastjac.jacobian("multiply", w, x,
                                                                   format="csr")))
        show("d(w > x)/dw as CSR (structurally zero)",
             sparse_summary(fastjac.jacobian("greater", w, x, format="csr")))

    section("3. Element-wise unary functions y = f(u): diag(f'(u))")
    print(f"  u = {u}  (below 0 the formulas 0.5/sqrt(u) and 1/u are evaluated as they stand, as in JAX and PyTorch)")
    for op in fastjac.UNARY_OPS:
        show(f"{op:>9}  f'(u)", fastjac.jacobian(op, u))

    section(f"4. Scalar expansion y = x o z, z = {z}")
    for op, a, b, label in [("add", x, z, "x + z"), ("subtract", x, z, "x - z"),
                            ("subtract", z, x, "z - x"), ("multiply", x, z, "x z"),
                            ("divide", x, z, "x / z"), ("divide", z, x, "z / x")]:
        x_pos = 0 if a is x else 1
        show(f"{label:>6}  diag dy/dx", fastjac.jacobian(op, a, b, wrt=x_pos))
        show(f"{label:>6}  dy/dz", fastjac.jacobian(op, a, b, wrt=1 - x_pos))
    if have_scipy:
        show("d(x / z)/dz as CSC (3x1)", sparse_summary(fastjac.jacobian("divide", x, z, wrt=1,
                                                                         format="csc")))

    section("5. Sum reduction y = sum(f(x)): gradients")
    show("d sum(x)/dx", fastjac.sum_gradient(None, x))
    show("d sum(tanh(x))/dx", fastjac.sum_gradient("tanh", x))
    show("d sum(x z)/dx", fastjac.sum_gradient("multiply", x, z))
    show("d sum(x z)/dz = sum(x)", fastjac.sum_gradient("multiply", x, z, wrt=1))
    show("d (w . x)/dw = x^T, numerator", fastjac.sum_gradient("multiply", w, x, format="dense"))
    show("d (w . x)/dx = w^T, denominator", fastjac.sum_gradient(
        "multiply", w, x, wrt=1, format="dense", layout="denominator"))
    if have_scipy:
        show("d (w . x)/dw as COO (1x3)", sparse_summary(fastjac.sum_gradient(
            "multiply", w, x, format="coo")))

    chain_rule_demo = _chain_rule_demo()
    if chain_rule_demo is not None:
        section("6. The chain rule")
        chain_rule_demo()
    print()


def _chain_rule_demo():
    """The expression layer's demo, where that layer is built."""
    try:
        from fastjac import expr
    except ImportError:
        return None
    return getattr(expr, "demo", None)


if __name__ == "__main__":
    main()
