"""Scalar-expansion family: y = x op z with z a scalar (section 4).

Each form is differentiated with respect to the array x (a diagonal, often
a constant fill) and with respect to the scalar z (the vector dy/dz, a
JVP with tangent 1 for the autodiff rivals). The scalar is a Python float,
as a user would pass it.
"""
import numpy as np

from ._harness import data, op_case

FAMILY = "expand"
DESCRIPTION = "jacobian(op, x, z, wrt=0|1) with z a scalar: a diagonal, or the vector dy/dz"

QUICK = {"x * z d/dz", "z / x d/dx"}


def _full(value_of):
    """A constant result whose value depends on the scalar operand."""
    def alloc(*args):
        arr = next(a for a in args if np.ndim(a))
        return np.full(arr.shape, value_of(*args), dtype=arr.dtype)

    def into(*args):
        args[-1].fill(value_of(*args[:-1]))
    return alloc, into


def _copy_x(x, z, out=None):
    if out is None:
        return x.copy()
    np.copyto(out, x)


def _x_over_z_dz():
    def into(x, z, out):
        np.multiply(x, -1.0 / (z * z), out=out)
    return (lambda x, z: x * (-1.0 / (z * z))), into


def _z_over_x_dx():
    def into(z, x, out):
        np.multiply(x, x, out=out)
        np.divide(-z, out, out=out)
    return (lambda z, x: -z / (x * x)), into


def _z_over_x_dz():
    return (lambda z, x: 1.0 / x), (lambda z, x, out: np.divide(1.0, x, out=out))


def _power_dx():
    def into(x, z, out):
        np.power(x, z - 1.0, out=out)
        out *= z
    return (lambda x, z: z * x ** (z - 1.0)), into


def _power_dz():
    def into(x, z, out):
        np.power(x, z, out=out)
        out *= np.log(x)
    return (lambda x, z: x ** z * np.log(x)), into


def _step(sign):
    # d max(x, z)/dx: (1 + sign(x - z)) / 2 ; d/dz: (1 - sign(x - z)) / 2
    def alloc(x, z):
        return 0.5 * (1.0 + sign * np.sign(x - z))

    def into(x, z, out):
        np.subtract(x, z, out=out)
        np.sign(out, out=out)
        if sign < 0:
            np.negative(out, out=out)
        out += 1.0
        out *= 0.5
    return alloc, into


# form: (op, names, [(formula, (numpy, numpy_out), reads) wrt names[0], then names[1]])
FORMS = {
    "x + z": ("add", ("x", "z"), [("1.0", _full(lambda x, z: 1.0), 0),
                                  ("1.0", _full(lambda x, z: 1.0), 0)]),
    "x - z": ("subtract", ("x", "z"), [("1.0", _full(lambda x, z: 1.0), 0),
                                       ("-1.0", _full(lambda x, z: -1.0), 0)]),
    "z - x": ("subtract", ("z", "x"), [("1.0", _full(lambda z, x: 1.0), 0),
                                       ("-1.0", _full(lambda z, x: -1.0), 0)]),
    "x * z": ("multiply", ("x", "z"), [("z", _full(lambda x, z: z), 0),
                                       ("x", (_copy_x, _copy_x), 1)]),
    "x / z": ("divide", ("x", "z"), [("1.0 / z", _full(lambda x, z: 1.0 / z), 0),
                                     ("-x / (z * z)", _x_over_z_dz(), 1)]),
    "z / x": ("divide", ("z", "x"), [("1.0 / x", _z_over_x_dz(), 1),
                                     ("-z / (x * x)", _z_over_x_dx(), 1)]),
    "x ** z": ("power", ("x", "z"), [("z * x ** (z - 1.0)", _power_dx(), 1),
                                     ("x ** z * log(x)", _power_dz(), 1)]),
    "maximum(x, z)": ("maximum", ("x", "z"),
                      [("where(x > z, 1.0, where(x < z, 0.0, 0.5))", _step(1), 1),
                       ("where(z > x, 1.0, where(z < x, 0.0, 0.5))", _step(-1), 1)]),
}


def cases(n, dtype):
    d = data(n, dtype)
    out = []
    for form, (op, names, per_wrt) in FORMS.items():
        args = tuple(d[name] for name in names)
        for wrt, (formula, (alloc, into), reads) in enumerate(per_wrt):
            name = f"{form} d/d{names[wrt]}"
            out.append(op_case(
                FAMILY, name, "compute" if op == "power" else "memory",
                op, args, wrt=wrt, names=names, fwd=form, formula=formula,
                numpy=alloc, numpy_out=into, reads=reads, quick=name in QUICK))
    return out
