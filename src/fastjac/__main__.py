"""``python -m fastjac``: the worked examples of the specification, computed.

Each section of docs/mathematics.md on a small vector, in both
layouts, compact, dense and (when SciPy is installed) sparse::

    python -m fastjac                 every section
    python -m fastjac --list          the sections' titles
    python -m fastjac -s 2 -s 6       sections 2 and 6
    python -m fastjac -s 7            a batch: the gradient of a mean-squared
                                      error with respect to a shared w
    python -m fastjac --version
"""
import argparse
import os
import sys

import numpy as np

import fastjac

W = np.array([1.0, 5.0, 3.0])
X = np.array([4.0, 2.0, 3.0])     # X[2] == W[2]: a tie for maximum/minimum
U = np.array([-1.0, 0.0, 0.5, 2.0])
Z = 2.0


def show(title, value):
    if isinstance(value, fastjac.Factor):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        text = np.array2string(np.asarray(value))
    if "\n" in text:
        print(f"  {title}:")
        print("    " + text.replace("\n", "\n    "))
    else:
        print(f"  {title}: {text}")


def sparse_summary(matrix):
    return f"{type(matrix).__name__} of shape {matrix.shape} with {matrix.nnz} stored entries"


def have_scipy():
    try:
        import scipy.sparse  # noqa: F401  (only to decide whether to show sparse output)
    except ImportError:
        return False
    return True


def layouts():
    show("d(w * z)/dz, numerator (3x1 column)", fastjac.jacobian("multiply", W, Z, wrt=1,
                                                                format="dense"))
    show("d(w * z)/dz, denominator (1x3 row)", fastjac.jacobian(
        "multiply", W, Z, wrt=1, format="dense", layout="denominator"))
    show("d sum(w)/dw, numerator (1x3 row)", fastjac.sum_gradient(None, W, format="dense"))
    show("d sum(w)/dw, denominator (3x1 column)", fastjac.sum_gradient(
        None, W, format="dense", layout="denominator"))
    M = np.arange(6.0).reshape(2, 3)
    show("d sum(X)/dX for X 2x3, numerator (3x2)", fastjac.sum_gradient(None, M, format="dense"))
    show("d (X * z)/dz for X 2x3, numerator (2x3)", fastjac.jacobian(
        "multiply", M, Z, wrt=1, format="dense"))
    show("identity f(x) = x: Jacobian I", fastjac.jacobian("identity", X, format="dense"))


def binary_operators():
    for op in fastjac.BINARY_OPS:
        show(f"{op:>9}  diag dy/dw", fastjac.jacobian(op, W, X, wrt=0))
        show(f"{op:>9}  diag dy/dx", fastjac.jacobian(op, W, X, wrt=1))
    print("  (at the tie w = x = 3, maximum and minimum give 0.5 to each operand)")
    show("d(w * x)/dw dense (diag(x))", fastjac.jacobian("multiply", W, X, format="dense"))
    if have_scipy():
        show("d(w * x)/dw as CSR", sparse_summary(fastjac.jacobian("multiply", W, X,
                                                                   format="csr")))
        show("d(w > x)/dw as CSR (structurally zero)",
             sparse_summary(fastjac.jacobian("greater", W, X, format="csr")))


def unary_functions():
    print(f"  u = {U}  (below 0 the formulas 0.5/sqrt(u) and 1/u are evaluated as they "
          f"stand, as in JAX and PyTorch)")
    for op in fastjac.UNARY_OPS:
        show(f"{op:>9}  f'(u)", fastjac.jacobian(op, U))


def scalar_expansion():
    for op, a, b, label in [("add", X, Z, "x + z"), ("subtract", X, Z, "x - z"),
                            ("subtract", Z, X, "z - x"), ("multiply", X, Z, "x z"),
                            ("divide", X, Z, "x / z"), ("divide", Z, X, "z / x")]:
        x_pos = 0 if a is X else 1
        show(f"{label:>6}  diag dy/dx", fastjac.jacobian(op, a, b, wrt=x_pos))
        show(f"{label:>6}  dy/dz", fastjac.jacobian(op, a, b, wrt=1 - x_pos))
    if have_scipy():
        show("d(x / z)/dz as CSC (3x1)", sparse_summary(fastjac.jacobian("divide", X, Z, wrt=1,
                                                                         format="csc")))


def sum_reduction():
    show("d sum(x)/dx", fastjac.sum_gradient(None, X))
    show("d sum(tanh(x))/dx", fastjac.sum_gradient("tanh", X))
    show("d sum(x z)/dx", fastjac.sum_gradient("multiply", X, Z))
    show("d sum(x z)/dz = sum(x)", fastjac.sum_gradient("multiply", X, Z, wrt=1))
    show("d (w . x)/dw = x^T, numerator", fastjac.sum_gradient("multiply", W, X, format="dense"))
    show("d (w . x)/dx = w^T, denominator", fastjac.sum_gradient(
        "multiply", W, X, wrt=1, format="dense", layout="denominator"))
    if have_scipy():
        show("d (w . x)/dw as COO (1x3)", sparse_summary(fastjac.sum_gradient(
            "multiply", W, X, format="coo")))


def chain_rule():
    fj = fastjac
    x, y = fj.var("x"), fj.var("y")
    fg = fj.compile([3 * x ** 2 * y, 2 * x + y ** 8], wrt=["x", "y"])
    print("  f(x, y) = 3x^2 y, g(x, y) = 2x + y^8 at x = 2, y = 1:"
          " [[6xy, 3x^2], [2, 8y^7]] = [[12, 12], [2, 8]]")
    show("Jacobian of (f, g), numerator layout", fg.jacobian(x=2.0, y=1.0, format="dense"))
    show("denominator layout (the transpose)",
         fg.jacobian(x=2.0, y=1.0, format="dense", layout="denominator"))

    w, v = fj.var("w"), fj.var("x")
    wv, xv = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    f = fj.compile(fj.sin(w) * fj.exp(v) - w / v)
    print("  y = sin(w) * exp(x) - w / x, w = [1, 2, 3], x = [0.5, -1, 2]:")
    show("dy/dw = diag(cos(w) exp(x) - 1/x), compact", f.jacobian("w", w=wv, x=xv))
    show("dy/dx = diag(sin(w) exp(x) + w/x^2), compact", f.jacobian("x", w=wv, x=xv))
    g = fj.compile(fj.sum(fj.tanh(w * v) + 3))
    print("  y = sum(tanh(w * x) + 3): a row times a diagonal is a row")
    show("dy/dw = (1 - tanh(w x)^2) x, compact", g.jacobian("w", w=wv, x=xv))
    show("dy/dw, numerator layout (1 x n)", g.jacobian("w", w=wv, x=xv, format="dense"))
    show("dy/dw, denominator layout (n x 1)",
         g.jacobian("w", w=wv, x=xv, format="dense", layout="denominator"))
    h = fj.compile(fj.tanh(fj.dot(w, v) / 10) * v)
    print("  y = tanh(w . x / 10) * x: a dot product feeding element-wise work is not diagonal")
    show("dy/dw (column x row: a rank-1 factor)", h.jacobian("w", w=wv, x=xv))
    show("dy/dw = x (tanh'(w.x/10) x / 10)^T, dense",
         h.jacobian("w", w=wv, x=xv, format="dense"))

    Xn = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 1.0]])
    t = np.array([1.0, 0.0, 2.0])
    wn, b = np.array([1.0, 1.0]), 0.0
    gw, gb, C = fj.neuron_gradient(Xn, t, wn, b, return_loss=True)
    print("  neuron: C = (1/N) sum_i (y_i - max(0, w.x_i + b))^2, X = [[1, 2], [3, -4], "
          "[0.5, 1]], y = [1, 0, 2], w = [1, 1], b = 0")
    print("    rows 0 and 2 are active (w.x_i + b = 3, 1.5 > 0), row 1 is not (-1)")
    show("dC/dw = (2/N) sum_active (z_i - y_i) x_i = (2/3)(2 [1, 2] - 0.5 [0.5, 1])", gw)
    show("dC/db = (2/3)(2 - 0.5)", gb)
    show("C", C)


def batches():
    Xb = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0], [0.0, 1.0, 1.0], [2.0, 2.0, -1.0]])
    Yb = np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.5, 2.0, 1.0], [3.0, 1.0, 0.0]])
    wb = np.array([1.0, 2.0, -1.0])
    print("  a batch X (4 x 3), targets Y (4 x 3), a shared w (3,) broadcast over the rows:")
    print("  L(w) = mean((X * w - Y)^2) = sum(r^2) / 12, r = X * w - Y")
    r = Xb * wb - Yb
    show("dr/dw, compact (one entry per element of r: X; dense it is 12 x 3)",
         fastjac.jacobian("multiply", wb, Xb))
    dL_dr = fastjac.sum_gradient("square", r) / r.size
    print("  chain rule: dL/dw = sum over the batch (the axis w is broadcast along) of "
          "dL/dr * dr/dw:")
    grad = fastjac.sum_gradient("multiply", wb, dL_dr * Xb)
    show("dL/dw = sum_i (2/12) r_i * x_i, compact (3,)", grad)
    show("dL/dw, numerator layout (1 x 3)",
         fastjac.sum_gradient("multiply", wb, dL_dr * Xb, format="dense"))
    show("dL/dw, denominator layout (3 x 1)",
         fastjac.sum_gradient("multiply", wb, dL_dr * Xb, format="dense", layout="denominator"))
    show("check: (2/12) (X * w - Y) summed against X over the rows", (2 / 12 * r * Xb).sum(0))
    show("per-row sums y_i = sum_j w_j x_ij: dy/dw (axis=-1), compact 4 x 3 = X",
         fastjac.sum_gradient("multiply", wb, Xb, axis=-1))


SECTIONS = {
    1: ("Layouts: numerator J[i, j] = dy_i/dx_j, denominator its transpose", layouts),
    2: ("Element-wise binary operators y = w o x: diagonal Jacobians", binary_operators),
    3: ("Element-wise unary functions y = f(u): diag(f'(u))", unary_functions),
    4: (f"Scalar expansion y = x o z, z = {Z}", scalar_expansion),
    5: ("Sum reduction y = sum(f(x)): gradients", sum_reduction),
    6: ("The chain rule: compiled expressions (fastjac.var, fastjac.compile)", chain_rule),
    7: ("Batches: broadcast operands and sums over axes", batches),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fastjac",
        description="Print the worked examples of the specification, computed by fastjac "
                    "(every section unless --section picks some).")
    parser.add_argument("--version", action="version", version=f"fastjac {fastjac.__version__}")
    parser.add_argument("-l", "--list", action="store_true", help="list the sections and exit")
    parser.add_argument("-s", "--section", type=int, action="append", choices=list(SECTIONS),
                        metavar="N", help="print section N (repeatable; see --list)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for number, (title, _) in SECTIONS.items():
            print(f"{number}. {title}")
        return 0
    np.set_printoptions(precision=4, suppress=True)
    print(f"fastjac {fastjac.__version__}: structured Jacobians, never a dense n x n "
          f"matrix unless asked")
    print(f"w = {W}, x = {X}, z = {Z}")
    for number in dict.fromkeys(args.section or SECTIONS):     # in order, once each
        title, body = SECTIONS[number]
        heading = f"{number}. {title}"
        print()
        print(heading)
        print("-" * len(heading))
        body()
    print()
    return 0


def run(argv=None):
    """main(), ending quietly with status 0 when stdout is closed early
    (``python -m fastjac | head -1``)."""
    try:
        try:
            status = main(argv)
        except SystemExit as stop:           # --help, --version, a usage error
            status = stop.code
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit: send what is
        # left to devnull (the recipe of the signal module's documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    return status


if __name__ == "__main__":
    sys.exit(run())
