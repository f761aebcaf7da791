"""Accuracy of the transcendental derivatives, in ulps, against mpmath.

The kernels compute exp, sin and cos with their own vectorised code
(src/fastjac/_vecmath.h) and the other formulas on top of them, so each
derivative is checked here against an oracle computed independently, with
mpmath at 200 bits, from the very same float32/float64 inputs.

Error measure: |computed - exact| / ulp, where ulp is the spacing of the
floats around the correctly rounded exact result (np.spacing of that value
in the array's dtype). For a result that rounds to zero or to a subnormal,
that spacing is the smallest subnormal, so tiny results are judged on an
absolute scale, as a correctly rounded function would be. A correctly
rounded function has error <= 0.5 ulp; the bound asserted is 4 ulp.

Every test runs once per instruction-set level of the kernels this CPU can
run (baseline, avx2, avx512: fastjac._simd), since each level is a separately
compiled copy of the loops; a level this CPU lacks is skipped, saying why.
"""
import mpmath
import numpy as np
import pytest

import fastjac
from fastjac import _simd
from helpers import REAL_ABOVE

mpmath.mp.prec = 200
MAX_ULP = 4.0
REPEAT = 12          # the checked points are tiled to reach the threaded path


LEVELS = _simd.available()


@pytest.fixture(params=_simd.LEVELS)
def simd(request):
    reason = _simd.why_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    chosen = _simd.select(request.param)
    assert chosen == request.param
    yield chosen
    _simd.select()


# -- oracles: the derivative of each function, in mpmath ------------------------

def _sigmoid_slope(x):
    e = mpmath.exp(-abs(x))
    return e / (1 + e) ** 2


UNARY_ORACLES = {
    "exp": mpmath.exp,
    "sin": mpmath.cos,
    "cos": lambda x: -mpmath.sin(x),
    "tanh": lambda x: mpmath.sech(x) ** 2,
    "sigmoid": _sigmoid_slope,
    "sqrt": lambda x: 1 / (2 * mpmath.sqrt(x)),
    "log": lambda x: 1 / x,
    "log2": lambda x: 1 / (x * mpmath.log(2)),
    "softplus": lambda x: 1 / (1 + mpmath.exp(-x)),
    "log_sigmoid": lambda x: 1 / (1 + mpmath.exp(x)),
    "log1p": lambda x: 1 / (1 + x),
    "expm1": mpmath.exp,
}


# ... and the second derivatives (sum_hessian), in mpmath
UNARY_SECOND_ORACLES = {
    "sqrt": lambda x: -mpmath.mpf(1) / 4 * x ** mpmath.mpf(-1.5),
    "exp": mpmath.exp,
    "log": lambda x: -1 / x ** 2,
    "log2": lambda x: -1 / (x ** 2 * mpmath.log(2)),
    "sin": lambda x: -mpmath.sin(x),
    "cos": lambda x: -mpmath.cos(x),
    "tanh": lambda x: -2 * mpmath.tanh(x) / mpmath.cosh(x) ** 2,
    "sigmoid": lambda x: -mpmath.exp(-x) * (1 - mpmath.exp(-x)) / (1 + mpmath.exp(-x)) ** 3,
    "softplus": lambda x: mpmath.exp(-x) / (1 + mpmath.exp(-x)) ** 2,
    "log_sigmoid": lambda x: -mpmath.exp(-x) / (1 + mpmath.exp(-x)) ** 2,
    "log1p": lambda x: -1 / (1 + x) ** 2,
    "expm1": mpmath.exp,
}


# Derivatives that are exact by construction (a constant, 2x, a sign): no
# mpmath oracle needed. Every other unary operator must have one.
EXACT_DERIVATIVES = {"identity", "negative", "square", "relu", "abs"}


def test_every_unary_operator_has_an_oracle():
    missing = set(fastjac.UNARY_OPS) - set(UNARY_ORACLES) - EXACT_DERIVATIVES
    assert not missing, f"no mpmath oracle of the derivative of {sorted(missing)}"
    missing = set(fastjac.UNARY_OPS) - set(UNARY_SECOND_ORACLES) - EXACT_DERIVATIVES
    assert not missing, f"no mpmath oracle of the second derivative of {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(UNARY_SECOND_ORACLES))
def test_unary_second_derivative_ulp(name):
    """sum_hessian's diagonal within 4 ulp of the exact value, over a wide
    range (mpmath, 40 digits)."""
    exact = UNARY_SECOND_ORACLES[name]
    rng = np.random.default_rng(1)
    if name == "log1p":
        x = np.concatenate([10.0 ** rng.uniform(-8, 3, 150), -(10.0 ** rng.uniform(-8, -0.01, 50))])
    elif REAL_ABOVE.get(name) == 0.0:
        x = 10.0 ** rng.uniform(-3, 3, 200)
    elif name in ("exp", "expm1"):
        x = rng.uniform(-700, 700, 200)
    else:
        x = np.concatenate([rng.uniform(-30, 30, 150), 10.0 ** rng.uniform(-8, 0, 50)])
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        if name in ("exp", "expm1") and dtype == np.float32:
            xd = (x / 8).astype(dtype)          # float32's range
        got = fastjac.sum_hessian(name, xd)
        with mpmath.workdps(40):
            want = np.array([float(exact(mpmath.mpf(float(v)))) for v in xd]).astype(dtype)
        ulp = np.spacing(np.abs(want).astype(dtype))
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / ulp
        assert err.max() <= 4, (name, dtype, xd[np.argmax(err)], err.max())


def _power_da(a, b):
    if b == 0:
        return mpmath.mpf(0)
    return b * mpmath.power(a, b - 1)


def _power_db(a, b):
    if a == 0 and b >= 0:
        return mpmath.mpf(0)
    return mpmath.power(a, b) * mpmath.log(a)


def _rng(seed):
    return np.random.default_rng(seed)


def _inputs(name, dtype):
    """Wide random ranges for each function, plus its hard regions."""
    rng = _rng(abs(hash((name, np.dtype(dtype).name))) % 2**32)
    f32 = dtype == np.float32
    parts = [rng.uniform(-1, 1, 300), rng.uniform(-10, 10, 300)]
    logs = np.logspace(-30 if f32 else -300, 1, 200)
    if name in ("exp", "expm1"):
        lo, hi = (-103.0, 88.7) if f32 else (-745.0, 709.7)
        parts += [rng.uniform(lo, hi, 1200), logs, -logs,
                  np.linspace(lo - 1, lo + 20, 100),    # subnormal results
                  np.linspace(hi - 10, hi, 100),        # near overflow
                  # float64: the edges of the short exp's range (|x| <= 708)
                  np.nextafter([708.0, 708.0, 708.0, -708.0, -708.0, -708.0],
                               [708.0, np.inf, 0.0, -708.0, -np.inf, 0.0])]
    elif name in ("sin", "cos"):
        k = rng.integers(-80000, 80000, 300).astype(np.float64)
        parts += [rng.uniform(-1000, 1000, 600),
                  rng.uniform(-131072, 131072, 300),
                  k * (np.pi / 2),                      # next to zeros of sin/cos
                  np.nextafter(k * (np.pi / 2), np.inf),
                  logs, -logs,
                  np.logspace(5, 30 if f32 else 300, 100),   # the libm path
                  -np.logspace(5, 30, 50)]
    elif name in ("tanh", "sigmoid", "softplus", "log_sigmoid"):
        lim = (45.0 if name == "tanh" else 90.0) if f32 else (360.0 if name == "tanh" else 720.0)
        parts += [rng.uniform(-40, 40, 800), rng.uniform(-lim, lim, 400), logs, -logs]
    elif name == "log1p":
        top = 37 if f32 else 307
        parts = [np.logspace(-top, top, 1000), -np.logspace(-top, -1e-7, 500),
                 rng.uniform(-1, 10, 500), rng.uniform(-100, -1, 100)]
    elif REAL_ABOVE.get(name) == 0.0:          # sqrt, log and the like
        parts = [np.logspace(-37 if f32 else -307, 37 if f32 else 307, 1200),
                 rng.uniform(0, 10, 300)]
        if name == "log":
            parts.append(-np.logspace(-37 if f32 else -307, 37 if f32 else 307, 200))
        if name == "sqrt":
            # the AVX-512 Newton iteration (_vecmath.h) over two binades of
            # mantissas (its estimate's period), at both ends of the normal
            # range, and the subnormals it hands to sqrt and a division
            fi = np.finfo(dtype)
            ends = np.array([fi.tiny, fi.max], dtype)
            parts += [rng.uniform(1, 4, 3000), ends,
                      np.nextafter(ends, np.array([np.inf, 0], dtype)),
                      np.nextafter(ends[:1], np.zeros(1, dtype)),
                      np.logspace(-45 if f32 else -323, -38 if f32 else -308, 50)]
    x = np.concatenate(parts).astype(dtype)
    return x[np.isfinite(x)]


def _exact(fn, xs):
    return [fn(mpmath.mpf(float(x))) for x in xs]


def _ulp_errors(got, exact, dtype):
    """Errors in ulps of the correctly rounded result (see module docstring)."""
    errors = np.empty(len(exact))
    tiny = np.finfo(dtype).smallest_subnormal
    for i, (g, e) in enumerate(zip(got, exact)):
        cr = np.array(float(e)).astype(dtype)     # the exact value, rounded
        if not np.isfinite(cr):
            errors[i] = 0.0 if g == cr else np.inf
            continue
        ulp = np.spacing(np.abs(cr)) if cr != 0 else tiny
        errors[i] = float(abs(mpmath.mpf(float(g)) - e) / mpmath.mpf(float(ulp)))
    return errors


def _check(name, got, exact, x, dtype):
    errors = _ulp_errors(got, exact, dtype)
    worst = int(np.argmax(errors))
    assert errors[worst] <= MAX_ULP, (
        f"{name}' {np.dtype(dtype).name}: {errors[worst]:.2f} ulp at x = {x[worst]!r} "
        f"(got {got[worst]!r}, exact {mpmath.nstr(exact[worst], 20)})")
    return errors[worst]


_CACHE = {}


def _unary_case(name, dtype):
    key = (name, dtype)
    if key not in _CACHE:
        x = _inputs(name, dtype)
        _CACHE[key] = x, _exact(UNARY_ORACLES[name], x)
    return _CACHE[key]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(UNARY_ORACLES))
def test_unary_derivative_ulp(simd, name, dtype):
    x, exact = _unary_case(name, dtype)
    tiled = np.tile(x, REPEAT)              # large enough for several threads
    got = fastjac.jacobian(name, tiled)
    assert got.dtype == dtype
    for r in range(REPEAT):
        _check(name, got[r * len(x):(r + 1) * len(x)], exact, x, dtype)
    # The hot-loop handle and the serial path give the same numbers.
    out = np.empty_like(x)
    fastjac.kernel(name)(x, out)
    np.testing.assert_array_equal(out, got[:len(x)])


def _power_case(dtype):
    key = ("power", dtype)
    if key not in _CACHE:
        rng = _rng(7 if dtype == np.float64 else 8)
        f32 = dtype == np.float32
        span = 3 if f32 else 6
        a = np.concatenate([np.logspace(-span, span, 500), rng.uniform(0, 4, 500)]).astype(dtype)
        b = np.concatenate([rng.uniform(-span, span, 800), rng.integers(-3, 4, 200)]).astype(dtype)
        da = [_power_da(mpmath.mpf(float(u)), mpmath.mpf(float(v)))
                               for u, v in zip(a, b)]
        db = [_power_db(mpmath.mpf(float(u)), mpmath.mpf(float(v))) for u, v in zip(a, b)]
        _CACHE[key] = a, b, da, db
    return _CACHE[key]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_power_derivatives_ulp(simd, dtype):
    a, b, da, db = _power_case(dtype)
    _check("power_da", fastjac.jacobian("power", a, b, wrt=0), da, a, dtype)
    _check("power_db", fastjac.jacobian("power", a, b, wrt=1), db, a, dtype)


def _logaddexp_case(dtype):
    """Pairs over wide ranges, a - b often not a float (operands of unlike
    size), far tails, ties; the exact d/da = sigmoid(a - b) and d/db."""
    key = ("logaddexp", dtype)
    if key not in _CACHE:
        rng = _rng(21 if dtype == np.float64 else 22)
        lim = 100.0 if dtype == np.float32 else 745.0
        a = np.concatenate([rng.uniform(-1, 1, 200), rng.uniform(-40, 40, 400),
                            rng.uniform(-lim, lim, 200), 10.0 ** rng.uniform(-30, 2, 200),
                            rng.uniform(-5, 5, 100)])
        b = np.concatenate([rng.uniform(-1, 1, 200), rng.uniform(-40, 40, 400),
                            rng.uniform(-lim, lim, 200), -(10.0 ** rng.uniform(-3, 2.5, 200)),
                            rng.uniform(-5, 5, 100)])
        b[-100:] = a[-100:]                                         # ties
        a, b = a.astype(dtype), b.astype(dtype)
        ma = [mpmath.mpf(float(u)) for u in a]
        mb = [mpmath.mpf(float(v)) for v in b]
        da = [1 / (1 + mpmath.exp(v - u)) for u, v in zip(ma, mb)]
        db = [1 / (1 + mpmath.exp(u - v)) for u, v in zip(ma, mb)]
        value = [m + mpmath.log1p(mpmath.exp(-abs(u - v)))
                 for u, v, m in zip(ma, mb, (max(u, v) for u, v in zip(ma, mb)))]
        _CACHE[key] = a, b, da, db, value
    return _CACHE[key]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logaddexp_derivatives_ulp(simd, dtype):
    a, b, da, db, _ = _logaddexp_case(dtype)
    ta, tb = np.tile(a, REPEAT), np.tile(b, REPEAT)       # the threaded path too
    got_a = fastjac.jacobian("logaddexp", ta, tb, wrt=0)
    got_b = fastjac.jacobian("logaddexp", ta, tb, wrt=1)
    for r in range(REPEAT):
        part = slice(r * len(a), (r + 1) * len(a))
        _check("logaddexp_da", got_a[part], da, a, dtype)
        _check("logaddexp_db", got_b[part], db, a, dtype)
    # a scalar operand (scalar expansion) takes the same formula
    _check("logaddexp_da", fastjac.jacobian("logaddexp", a, b[7], wrt=0),
           [1 / (1 + mpmath.exp(mpmath.mpf(float(b[7])) - mpmath.mpf(float(u)))) for u in a],
           a, dtype)
    # ties (infinities included): 0.5 each; NaN propagates; as the limits elsewhere
    u = np.array([1.5, INF, -INF, NAN, 1.0, INF, -INF, 1e30], dtype)
    v = np.array([1.5, INF, -INF, 1.0, NAN, 1.0, 1.0, -1e30], dtype)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(fastjac.jacobian("logaddexp", u, v, wrt=0),
                                      [0.5, 0.5, 0.5, NAN, NAN, 1.0, 0.0, 1.0])
        np.testing.assert_array_equal(fastjac.jacobian("logaddexp", u, v, wrt=1),
                                      [0.5, 0.5, 0.5, NAN, NAN, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logaddexp_values_ulp(simd, dtype):
    """The expression value, against mpmath: within 4 ulp of the result, or
    where it cancels (max(a, b) < 0 and the result near 0, as in any formula
    of the form max + log1p(...), NumPy's included) of max(a, b)."""
    a, b, _, _, value = _logaddexp_case(dtype)
    f = fastjac.compile(fastjac.logaddexp(fastjac.var("a"), fastjac.var("b")))
    got = f.value(a=a, b=b)
    assert got.dtype == dtype
    errors = _ulp_errors(got, value, dtype)
    exact = np.array([float(v) for v in value])
    scale = np.maximum(np.abs(exact), np.abs(np.maximum(a, b).astype(np.float64)))
    ratio = np.spacing(np.abs(exact).astype(dtype)) / np.spacing(scale.astype(dtype))
    errors = errors * np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    worst = int(np.argmax(errors))
    assert errors[worst] <= MAX_ULP, (a[worst], b[worst], got[worst], value[worst])
    u = np.array([1.5, INF, -INF, NAN, 1.0, INF, -INF, 1e30, -1e30, 0.0], dtype)
    v = np.array([1.5, INF, -INF, 1.0, NAN, 1.0, 1.0, -1e30, -1e30, -0.0], dtype)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(f.value(a=u, b=v), np.logaddexp(u, v))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_divide_db_ulp(simd, dtype):
    """d(a/b)/db = -a/b**2 is computed as -a/(b*b) where b*b is a normal
    number and as -(a/b)/b where it is not (b*b overflows or underflows
    although the result need not): both within MAX_ULP everywhere."""
    f32 = dtype == np.float32
    top = 38 if f32 else 307
    half = 19 if f32 else 154                  # b*b leaves the normal range here
    rng = _rng(11 if f32 else 12)
    b = np.concatenate([rng.uniform(0.1, 10, 300),
                        np.logspace(-top, top, 300),
                        np.logspace(half - 2, half + 3, 200),      # b*b overflows
                        np.logspace(-half - 3, -half + 2, 200),    # b*b subnormal or 0
                        -np.logspace(-half - 3, half + 3, 100)])
    a = np.concatenate([rng.uniform(-10, 10, 500),
                        np.logspace(-top, top, 300) * rng.choice([-1, 1], 300),
                        np.logspace(half, top, 200), rng.uniform(-1, 1, 100)])
    x, y = b.astype(dtype), a.astype(dtype)
    keep = np.isfinite(x) & np.isfinite(y) & (x != 0)
    x, y = x[keep], y[keep]
    exact = [-mpmath.mpf(float(u)) / mpmath.mpf(float(v)) ** 2 for u, v in zip(y, x)]
    got = fastjac.jacobian("divide", np.tile(y, REPEAT), np.tile(x, REPEAT), wrt=1)
    for r in range(REPEAT):
        _check("divide_db", got[r * len(x):(r + 1) * len(x)], exact, x, dtype)
    # a scalar denominator (scalar expansion) takes the same formulas
    for z in (dtype(3.0), dtype(10.0 ** (half + 1)), dtype(10.0 ** -(half + 1))):
        exact_z = [-mpmath.mpf(float(u)) / mpmath.mpf(float(z)) ** 2 for u in y]
        _check("divide_db", fastjac.jacobian("divide", y, z, wrt=1), exact_z, y, dtype)
        # and d sum(y / z)/dz = -(sum y) / z**2, relative to the size of its
        # terms (where none of them overflows: then inf - inf is NaN either way)
        if not all(abs(float(e)) <= np.finfo(dtype).max for e in exact_z):
            continue
        got_sum = float(fastjac.sum_gradient("divide", np.tile(y, REPEAT), z, wrt=1))
        scale = float(sum(abs(e) for e in exact_z)) * REPEAT
        exact_sum = float(mpmath.fsum(exact_z) * REPEAT)
        assert abs(got_sum - exact_sum) <= 8 * np.finfo(dtype).eps * scale, (z, got_sum, exact_sum)


# -- special values --------------------------------------------------------------

INF, NAN = np.inf, np.nan
SPECIALS = {
    # function: [(x, derivative)]
    "exp": [(-INF, 0.0), (INF, INF), (NAN, NAN), (-1e308, 0.0), (1e308, INF),
            (-0.0, 1.0), (800.0, INF), (-800.0, 0.0)],
    "sin": [(INF, NAN), (-INF, NAN), (NAN, NAN), (0.0, 1.0), (-0.0, 1.0), (1e30, None)],
    "cos": [(INF, NAN), (-INF, NAN), (NAN, NAN), (0.0, -0.0), (-0.0, 0.0), (1e30, None)],
    "tanh": [(INF, 0.0), (-INF, 0.0), (NAN, NAN), (0.0, 1.0), (1e300, 0.0)],
    "sigmoid": [(INF, 0.0), (-INF, 0.0), (NAN, NAN), (0.0, 0.25), (-1e300, 0.0)],
    "softplus": [(INF, 1.0), (-INF, 0.0), (NAN, NAN), (0.0, 0.5), (-0.0, 0.5),
                 (-1e300, 0.0), (1e300, 1.0)],
    "log_sigmoid": [(INF, 0.0), (-INF, 1.0), (NAN, NAN), (0.0, 0.5), (-0.0, 0.5),
                    (-1e300, 1.0), (1e300, 0.0)],
    "sqrt": [(0.0, INF), (INF, 0.0), (NAN, NAN), (-1.0, NAN)],
    "log": [(0.0, INF), (-0.0, -INF), (INF, 0.0), (NAN, NAN)],
    "log2": [(0.0, INF), (-0.0, -INF), (INF, 0.0), (-INF, -0.0), (NAN, NAN)],
    "expm1": [(-INF, 0.0), (INF, INF), (NAN, NAN), (-1e308, 0.0), (1e308, INF),
              (-0.0, 1.0), (800.0, INF), (-800.0, 0.0)],
    "log1p": [(-1.0, INF), (0.0, 1.0), (-0.0, 1.0), (INF, 0.0), (NAN, NAN), (-3.0, -0.5)],
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(SPECIALS))
def test_special_values(simd, name, dtype):
    with np.errstate(over="ignore"):        # 1e308 is inf in float32: fine
        xs = np.array([x for x, _ in SPECIALS[name]], dtype=dtype)
    for n_copies in (1, 5000):          # serial and threaded paths
        got = fastjac.jacobian(name, np.tile(xs, n_copies))[:len(xs)]
        for x, (_, want), g in zip(xs, SPECIALS[name], got):
            if want is None:            # a huge finite argument: libm's value
                ref = np.cos(x) if name == "sin" else -np.sin(x)
                assert abs(g - ref) <= 2 * np.spacing(np.abs(ref)), (name, x, g, ref)
            elif np.isnan(want):
                assert np.isnan(g), (name, x, g)
            else:
                assert g == want and np.signbit(g) == np.signbit(np.array(want, dtype)), \
                    (name, x, g, want)


# -- the sum kernel: gradients of a sum with respect to a scalar --------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_gradient_by_scalar(simd, dtype):
    """d sum(x ** z)/dz = sum(x**z ln x) and d sum(z ** x)/dz = sum(x z**(x-1)),
    through the summing kernel, against an exact mpmath sum."""
    rng = _rng(11)
    x = rng.uniform(0.01, 3.0, 3000).astype(dtype)
    z = dtype(1.7)
    zm = mpmath.mpf(float(z))
    xm = [mpmath.mpf(float(v)) for v in x]
    exact_dz = mpmath.fsum(mpmath.power(v, zm) * mpmath.log(v) for v in xm)
    exact_dz2 = mpmath.fsum(v * mpmath.power(zm, v - 1) for v in xm)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for reps in (1, 30):                # serial, then threaded
        xt = np.tile(x, reps)
        g1 = fastjac.sum_gradient("power", xt, z, wrt=1)
        g2 = fastjac.sum_gradient("power", z, xt, wrt=0)
        assert g1.dtype == dtype and g2.dtype == dtype
        assert abs(float(g1) - reps * float(exact_dz)) <= tol * abs(reps * float(exact_dz))
        assert abs(float(g2) - reps * float(exact_dz2)) <= tol * abs(reps * float(exact_dz2))


def test_levels_agree_on_exp_family():
    """Each instruction set computes the same formulas: results differ by at
    most an ulp or two (FMA contraction), never more."""
    x = np.linspace(-30, 30, 10001)
    results = {}
    for level in LEVELS:
        _simd.select(level)
        results[level] = {name: fastjac.jacobian(name, x) for name in ("exp", "tanh", "sigmoid", "sin")}
    _simd.select()
    base = results[LEVELS[0]]
    for level in LEVELS[1:]:
        for name, values in results[level].items():
            np.testing.assert_allclose(values, base[name], rtol=4 * np.finfo(float).eps, atol=0)


# -- values of the expression functions (fastjac.compile(...).value) ---------------
# The expression layer computes these values itself (_formulas.h's fj_v_*
# and fj_m_*, in the loops of the level in use and in compiled
# expressions); their derivatives are the kernels' above.

VALUE_ORACLES = {
    "softplus": lambda x: mpmath.log1p(mpmath.exp(x)),
    "log_sigmoid": lambda x: -mpmath.log1p(mpmath.exp(-x)),
    "log1p": mpmath.log1p,
    "expm1": mpmath.expm1,
    "log2": lambda x: mpmath.log(x, 2),
}
# the edges of a function's domain, for the special values
VALUE_EDGES = {
    "log1p": [-1.0, -2.0],
}
# where a function is real (mpmath would be complex elsewhere)
VALUE_DOMAIN = {
    "log1p": lambda x: x > -1,
    "log2": lambda x: x > 0,
}
# x: what NumPy gives (the reference for NaN, infinities and signed zeros)
VALUE_SPECIALS = {
    "softplus": lambda x: np.logaddexp(0, x),
    "log_sigmoid": lambda x: -np.logaddexp(0, -x),
    "log1p": np.log1p,
    "expm1": np.expm1,
    "log2": np.log2,
}


def _value_case(name, dtype):
    key = ("value", name, dtype)
    if key not in _CACHE:
        rng = _rng(abs(hash(key[:2])) % 2**32)
        f32 = dtype == np.float32
        lim = 100.0 if f32 else 750.0
        logs = np.logspace(-40 if f32 else -310, 1.5, 300)
        x = np.concatenate([rng.uniform(-1, 1, 300), rng.uniform(-40, 40, 600),
                            rng.uniform(-lim, lim, 300), logs, -logs]).astype(dtype)
        if name in VALUE_DOMAIN:
            near = -1 + np.logspace(-7 if f32 else -15, -0.1, 100)    # near the pole
            x = np.concatenate([x, near.astype(dtype)])
            x = x[VALUE_DOMAIN[name](x)]
        x = x[np.isfinite(x)]
        _CACHE[key] = x, _exact(VALUE_ORACLES[name], x)
    return _CACHE[key]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(VALUE_ORACLES))
def test_expression_values_ulp(simd, name, dtype):
    x, exact = _value_case(name, dtype)
    f = fastjac.compile(getattr(fastjac, name)(fastjac.var("x")))
    got = f.value(x=x)
    assert got.dtype == dtype
    _check(f"{name} (value)", got, exact, x, dtype)
    specials = np.array([0.0, -0.0, INF, -INF, NAN, 1e30, -1e30, 5e-324]
                        + VALUE_EDGES.get(name, []), dtype)
    with np.errstate(all="ignore"):
        want = VALUE_SPECIALS[name](specials)
    np.testing.assert_array_equal(f.value(x=specials), want)


# -- the streamed path (results beyond the caches, non-temporal stores) ------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streamed_results_equal_cached_ones(simd, dtype):
    """A result of >= 16 MB is computed in blocks and written with
    non-temporal stores (a fill, which reads no array, with ordinary ones);
    it must equal, bit for bit, the same numbers computed in small pieces,
    whatever the alignment of out."""
    n = (1 << 24) // np.dtype(dtype).itemsize + 77
    rng = _rng(5)
    a = rng.uniform(-3, 3, n).astype(dtype)
    b = rng.uniform(0.5, 2, n).astype(dtype)
    a[::1000] = 2e5                      # huge arguments of sin: the libm fixup
    buffer = np.empty(n + 1, dtype)
    for shift in (0, 1):                 # out aligned to a line, and not
        out = buffer[shift:shift + n]
        for op, wrt, args in [("sin", 0, (a,)), ("tanh", 0, (a,)), ("multiply", 0, (a, b)),
                              ("divide", 1, (a, b)), ("divide", 1, (a, dtype(1.5))),
                              # fills: 1, x * 1.5 d/dx = 1.5, -1
                              ("add", 1, (a, b)), ("multiply", 0, (a, dtype(1.5))),
                              ("negative", 0, (a,))]:
            fastjac.kernel(op, wrt)(*[np.asarray(x) for x in args], out)
            pieces = np.concatenate([fastjac.jacobian(op, *[x[i:i + 4096] if np.ndim(x) else x
                                                          for x in args], wrt=wrt)
                                     for i in range(0, n, 4096)])
            np.testing.assert_array_equal(out, pieces, err_msg=f"{op} wrt {wrt} shift {shift}")
            if op in ("add", "negative") or (op == "multiply" and np.ndim(args[1]) == 0):
                fill = {"add": 1.0, "negative": -1.0, "multiply": 1.5}[op]
                assert (out == fill).all(), f"{op}: not a fill of {fill}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exceptional_elements_into_a_separate_out_and_in_place(simd, dtype):
    """Tags with exceptions (sin's huge arguments, d(a/b)/db where b*b is not
    normal) compute straight into a separate out and fix the rare elements
    up in a second pass; in place (out is an operand) they go through a
    buffer. Both give the same bits, and the closed form."""
    n = 100_003                          # on the pool's threads
    rng = _rng(7)
    a = rng.uniform(-3, 3, n).astype(dtype)
    b = rng.uniform(0.5, 2, n).astype(dtype)
    a[::997] = 3e5                       # beyond the vectorised argument reduction
    tiny = 1e-160 if dtype == np.float64 else 1e-20
    b[5::991] = tiny                     # b * b below the normal range
    a[5::991] = tiny                     # (a/b)/b = 1/tiny: finite
    for op, wrt, args, closed in [
            ("sin", 0, (a,), lambda a, b: np.cos(a)),
            ("cos", 0, (a,), lambda a, b: -np.sin(a)),
            ("divide", 1, (a, b), lambda a, b: -(a / b) / b)]:
        separate = fastjac.kernel(op, wrt)(*args, np.empty(n, dtype))
        copies = [x.copy() for x in args]
        in_place = fastjac.kernel(op, wrt)(*copies, copies[wrt])
        np.testing.assert_array_equal(separate, in_place, err_msg=f"{op}")
        expect = closed(a.astype(np.float64), b.astype(np.float64))
        np.testing.assert_allclose(separate, expect, rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps, err_msg=f"{op}")
