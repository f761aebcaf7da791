#!/usr/bin/env python
"""Bounded fuzzing of fastjac's public API.

Every input is a random call of ``jacobian``, ``sum_gradient``, ``kernel``
(and, when present, ``compile`` of a random expression tree and its
``jacobian``, checked against self-consistent finite differences): valid and invalid
operators, operands of every dtype, shape and memory layout (with NaN, inf,
subnormals, huge values), lists and junk objects, and random ``wrt``,
``layout``, ``format`` and ``out``. Each call must either return a result
that passes the checks below or raise one of the documented exceptions
(TypeError, ValueError, OverflowError, MemoryError); it must never crash,
hang, raise anything else, or modify an input. Checks on a result: float32
or float64 dtype, the documented shape, and, for moderate float64 operands,
the value of the independent oracle (tests/oracle.py).

Two engines draw the inputs:

* ``hypothesis`` (default, needs only the test extras): random and shrinking;
* ``atheris`` (``pip install atheris``): coverage-guided, libFuzzer-driven.

Usage::

    python fuzz/fuzz_api.py --seconds 30              # bounded, as CI runs it
    python fuzz/fuzz_api.py --examples 20000          # a fixed number of inputs
    python fuzz/fuzz_api.py --engine atheris --seconds 600

Exit status 0 means no failure; a failure prints the offending call (with
hypothesis, shrunk to a minimal example) and exits non-zero.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import fastjac                  # noqa: E402
import oracle                   # noqa: E402

ALLOWED = (TypeError, ValueError, OverflowError, MemoryError)
HAS_EXPR = hasattr(fastjac, "compile") and hasattr(fastjac, "Expr")

OPS = list(oracle.BINARY_OPS + oracle.UNARY_OPS) + [
    np.multiply, np.tanh, np.absolute, "absolute", None, "nope", "", 3, ["add"], b"exp"]
DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_,
          np.complex128, object, "datetime64[s]", np.longdouble, ">f8", "<f4"]
SHAPES = [(), (0,), (1,), (2,), (5,), (3, 2), (2, 0), (2, 1, 3), (17,), (4, 4)]
VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1e-3, 1e3, np.nan, np.inf, -np.inf,
          5e-324, 1e-40, 1e308, -1e308, 3.4e38, 1e30]
JUNK = [None, "abc", b"x", 1j, object(), {"a": 1}, [1.0, None], [[1.0], [2.0, 3.0]],
        10 ** 400, float("nan"), True, 7, -3.5, [], (), [1, 2, 3], (1.5, 2.5)]
WRTS = [0, 1, 0, 1, 2, -1, True, 1.0, None, "0", np.int64(1)]
LAYOUTS = ["numerator", "denominator", "numerator", "Numerator", None, 0]
FORMATS = ["compact", "compact", "dense", "csr", "csc", "coo", "dia", "sparse", "lil", None]


class Chooser:
    """The source of choices; engines differ only in where the numbers come from."""

    def choose(self, n):            # an int in [0, n)
        raise NotImplementedError

    def pick(self, seq):
        return seq[self.choose(len(seq))]


def make_array(ch, shape=None):
    shape = ch.pick(SHAPES) if shape is None else shape
    dtype = np.dtype(ch.pick(DTYPES))
    n = int(np.prod(shape))
    vals = [ch.pick(VALUES) for _ in range(min(n, 8))]
    vals = (vals * (n // max(len(vals), 1) + 1))[:n] if vals else []
    with np.errstate(all="ignore"):
        if dtype.kind == "M":
            arr = np.arange(n).astype(dtype).reshape(shape)
        elif dtype == object:
            arr = np.array(vals + [None] * 0, dtype=object).reshape(shape) if n else \
                np.empty(shape, object)
        else:
            base = np.nan_to_num(np.array(vals, dtype=np.float64), nan=0.0, posinf=7.0,
                                 neginf=-7.0) if dtype.kind in "iub" else np.array(vals)
            arr = base.astype(dtype).reshape(shape)
    layout = ch.choose(6)
    if layout == 1 and arr.ndim:
        arr = np.ascontiguousarray(arr[..., ::-1])[..., ::-1]
    elif layout == 2 and arr.ndim >= 2:
        arr = np.asfortranarray(arr)
    elif layout == 3 and arr.ndim:
        buf = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
        buf[..., ::2] = arr
        arr = buf[..., ::2]
    elif layout == 4:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def make_operand(ch, shape=None):
    kind = ch.choose(10)
    if kind < 6:
        return make_array(ch, shape)
    if kind == 6:
        return make_array(ch, shape).tolist()
    if kind == 7:
        return ch.pick(VALUES)
    if kind == 8:
        return ch.pick([2, -1, True, 0])
    return ch.pick(JUNK)


def build_valid_call(ch):
    """A well-formed call on moderate float64 values: checked against the oracle."""
    op = ch.pick(oracle.BINARY_OPS + oracle.UNARY_OPS)
    shape = ch.pick(SHAPES)
    n = int(np.prod(shape))
    moderate = [0.0, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1e-3, 10.0, -7.25, 0.1]
    a = np.array([ch.pick(moderate) for _ in range(n)], dtype=np.float64).reshape(shape)
    b = None
    if op in oracle.BINARY_OPS:
        b = np.array([ch.pick(moderate) for _ in range(n)], dtype=np.float64).reshape(shape)
    fn = fastjac.jacobian if ch.choose(2) else fastjac.sum_gradient
    kwargs = {"wrt": ch.choose(2) if b is not None else 0}
    return ((fn.__name__, op, kwargs), (lambda: fn(op, a, b, **kwargs)), (a, b), kwargs)


# -- the expression layer -------------------------------------------------------------

def random_expr(ch, depth=0):
    """(expression, forward(w, x), interior(w, x)) of a random tree.

    ``interior`` is True where every singular function of the tree (sqrt, log,
    divide, power) is evaluated strictly inside its domain and no kink (a tie
    of maximum/minimum, relu or abs at 0) is hit: there the chain rule and
    finite differences must agree (at sqrt(0) they need not: the chain rule
    gives inf * 0 = NaN, as autodiff frameworks do).
    """
    f64 = lambda v: np.asarray(v, float)                              # noqa: E731
    kind = ch.choose(6) if depth < 3 else ch.choose(2)
    if kind == 0:
        name = ch.pick(["w", "x"])
        return (fastjac.var(name), (lambda w, x, name=name: w if name == "w" else x),
                lambda w, x: True)
    if kind == 1:
        c = ch.pick([0.5, 2.0, -1.0, 3, 1e-3])
        return c, (lambda w, x, c=c: c), (lambda w, x: True)
    if kind in (2, 3):
        op = ch.pick(oracle.BINARY_OPS)
        (ea, fa, oka), (eb, fb, okb) = random_expr(ch, depth + 1), random_expr(ch, depth + 1)
        fwd = oracle.FORWARD[op]

        def interior(w, x):
            ok = oka(w, x) & okb(w, x)
            with np.errstate(all="ignore"):
                if op == "divide":
                    ok = ok & (np.abs(f64(fb(w, x))) > 1e-3)
                if op == "power":
                    ok = ok & (f64(fa(w, x)) > 1e-3)
                if op in ("maximum", "minimum"):
                    # at a tie the chain rule applies the 0.5/0.5 convention to
                    # each factor, which a smooth composite (max(min(w, c), w) = w)
                    # need not agree with
                    ok = ok & (np.abs(f64(fa(w, x)) - f64(fb(w, x))) > 1e-3)
            return ok
        return (getattr(fastjac, op)(ea, eb),
                (lambda w, x: fwd(f64(fa(w, x)), f64(fb(w, x)))), interior)
    op = ch.pick(oracle.UNARY_OPS)
    ea, fa, oka = random_expr(ch, depth + 1)
    fwd = oracle.FORWARD[op]

    def interior(w, x):
        ok = oka(w, x)
        with np.errstate(all="ignore"):
            if op in ("sqrt", "log"):
                ok = ok & (f64(fa(w, x)) > 1e-3)
            if op in ("relu", "abs"):               # the kink at 0, as for ties
                ok = ok & (np.abs(f64(fa(w, x))) > 1e-3)
        return ok
    return getattr(fastjac, op)(ea), (lambda w, x: fwd(f64(fa(w, x)))), interior


def build_expr_call(ch):
    """A random expression, compiled, and its jacobian with random or valid values."""
    expr, forward, interior = random_expr(ch)
    if not isinstance(expr, fastjac.Expr):           # a bare constant
        expr = fastjac.var("w") * 1.0 + expr
        forward0 = forward
        forward = lambda w, x: w * 1.0 + np.asarray(forward0(w, x), float)   # noqa: E731
    shape = ch.pick([(), (1,), (5,), (2, 3), (0,)])
    valid = ch.choose(2) == 0
    values = {}
    for name in ("w", "x"):
        if valid:
            moderate = [0.25, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1.5]
            n = int(np.prod(shape))
            values[name] = np.array([ch.pick(moderate) for _ in range(n)]).reshape(shape)
        else:
            values[name] = make_operand(ch, shape)
    kwargs = {}
    if not valid and ch.choose(2):
        kwargs["format"] = ch.pick(FORMATS)
    if not valid and ch.choose(4) == 0:
        kwargs["layout"] = ch.pick(LAYOUTS)

    def call():
        f = fastjac.compile(expr)
        if not f.variables:                  # a constant expression
            kwargs["wrt_name"] = None
            return f.value()
        wrt = f.variables[ch.choose(len(f.variables))]
        kwargs["wrt_name"] = wrt
        given = {k: v for k, v in values.items() if k in f.variables}
        return f.jacobian(wrt, **given, **{k: v for k, v in kwargs.items()
                                          if k != "wrt_name"})
    return (("expr", str(expr), kwargs, valid, forward, values, interior), call,
            tuple(values.values()), kwargs)


def check_expr_result(desc, result, values):
    """For moderate values, compare the diagonal with a self-consistent central difference."""
    _, text, kwargs, valid, forward, _, interior = desc
    if not valid or kwargs.get("format", "compact") != "compact" or \
            not isinstance(result, np.ndarray) or "sum" in text or "dot" in text:
        return
    wrt = kwargs["wrt_name"]
    w, x = values["w"], values["x"]
    if wrt is None:
        return
    if np.ndim(values[wrt]) == 0 or np.shape(result) != np.shape(values[wrt]):
        return

    def at(h):
        return np.broadcast_to(np.asarray(forward(w + h, x) if wrt == "w" else
                                          forward(w, x + h), float), np.shape(result))

    def diff(h):
        return (at(h) - at(-h)) / (2 * h)
    with np.errstate(all="ignore"):
        d1, d2 = diff(1e-4), diff(5e-5)
        scale = np.maximum(1.0, np.abs(d2))
        # round-off of a difference quotient is about eps * |f| / h: with a large
        # value (w + exp(exp(3)) ~ 5e8) it swamps the slope, so such points say
        # nothing about the derivative and are left out
        magnitude = np.maximum(np.abs(at(5e-5)), np.abs(at(-5e-5)))
        resolvable = 64 * np.finfo(float).eps * magnitude / 5e-5 < 1e-6 * scale
        # smooth: the two central differences agree, and so do the one-sided
        # slopes on either side (at a kink, e.g. a tie of maximum, they do not,
        # while a central difference returns the mean of the two slopes)
        right, left = (at(1e-6) - at(0.0)) / 1e-6, (at(0.0) - at(-1e-6)) / 1e-6
        smooth = np.isfinite(d1) & np.isfinite(d2) & (np.abs(d1 - d2) < 1e-6 * scale) \
            & (np.abs(right - left) < 1e-3 * scale) \
            & resolvable & np.broadcast_to(interior(w, x), np.shape(result))
        # where the two steps agree to 1e-6 the function is smooth there, and the
        # Richardson estimate (4 d2 - d1) / 3 is good to ~1e-9 relative
        est = (4 * d2 - d1) / 3
        bad = smooth & ~(np.abs(np.asarray(result, float) - est) <= 1e-5 * scale)
    assert not bad.any(), f"{text} d/d{wrt}: got {result[bad][:3]}, finite differences " \
                          f"{est[bad][:3]} at w={np.asarray(w)[bad] if np.ndim(w) else w}"


def build_call(ch):
    """(description, function, args, kwargs) of one random call."""
    if HAS_EXPR and ch.choose(5) == 0:
        return build_expr_call(ch)
    if ch.choose(3) == 0:
        return build_valid_call(ch)
    which = ch.choose(4)
    op = ch.pick(OPS)
    shape = ch.pick(SHAPES)
    a = make_operand(ch, shape)
    b = make_operand(ch, shape if ch.choose(4) else ch.pick(SHAPES)) if ch.choose(3) else None
    if which == 3:                   # the low-level kernel
        wrt = ch.pick(WRTS)
        out = make_array(ch, shape)
        args = (a, out) if b is None else (a, b, out)
        return ("kernel", op, wrt, args), (lambda: fastjac.kernel(op, wrt)(*args)), args, {}
    fn = fastjac.jacobian if which < 2 else fastjac.sum_gradient
    kwargs = {}
    if ch.choose(2):
        kwargs["wrt"] = ch.pick(WRTS)
    if ch.choose(3) == 0:
        kwargs["layout"] = ch.pick(LAYOUTS)
    if ch.choose(2):
        kwargs["format"] = ch.pick(FORMATS)
    if ch.choose(4) == 0:
        kwargs["out"] = make_array(ch, ch.pick([shape, (), (shape[0] if shape else 1,) * 2]))
    return ((fn.__name__, op, kwargs), (lambda: fn(op, a, b, **kwargs)), (a, b), kwargs)


def snapshot(objs):
    return [(o, o.copy()) for o in objs if isinstance(o, np.ndarray)]


def moderate_float64(x):
    arr = np.asarray(x) if not isinstance(x, list) else None
    return (isinstance(x, np.ndarray) and arr.dtype == np.float64 and arr.size
            and np.all(np.isfinite(arr)) and np.all((arr == 0) | (np.abs(arr) > 1e-3))
            and np.all(np.abs(arr) < 1e3))


def check_result(desc, result, args, kwargs):
    name, op = desc[0], desc[1]
    if hasattr(result, "toarray"):
        assert result.dtype in (np.float32, np.float64), desc
        assert result.ndim == 2, desc
        return
    arr = np.asarray(result)
    assert arr.dtype in (np.float32, np.float64), (desc, arr.dtype)
    fmt = kwargs.get("format", "compact")
    if name == "kernel" or fmt == "dense":
        return
    a, b = args
    if isinstance(op, str) and op in oracle.BINARY_OPS + oracle.UNARY_OPS \
            and moderate_float64(a) and (b is None or moderate_float64(b)) \
            and (b is None or np.shape(a) == np.shape(b)):
        wrt = kwargs.get("wrt", 0)
        if name == "jacobian":
            expected = oracle.compact_jacobian(op, a, b, wrt)
        else:
            expected = oracle.compact_sum_gradient(op, a, b, wrt)
        rtol, atol = oracle.tolerance(op, a, b, wrt, np.float64)
        oracle.assert_close(arr, expected, rtol, atol, dtype=np.float64, err_msg=str(desc))


def one_input(ch):
    """Run one random call; raise AssertionError on any violation."""
    desc, call, args, kwargs = build_call(ch)
    out = kwargs.get("out")
    watched = [x for x in list(args) + [out] if isinstance(x, np.ndarray)]
    if name_is_kernel(desc):
        watched = [x for x in watched if x is not args[-1]]
    elif out is not None:
        watched = [x for x in watched if x is not out]
    if out is not None or name_is_kernel(desc):
        target = out if out is not None else args[-1]
        watched = [x for x in watched if not np.shares_memory(x, target)]
    before = snapshot(watched)
    try:
        with np.errstate(all="ignore"):
            result = call()
    except ALLOWED as exc:
        assert str(exc), f"{type(exc).__name__} without a message for {desc}"
    except Exception as exc:        # noqa: BLE001 - anything else is a finding
        raise AssertionError(f"{desc} raised {type(exc).__name__}: {exc}") from exc
    else:
        if desc[0] == "expr":
            check_expr_result(desc, result, desc[5])
        else:
            check_result(desc, result, args, kwargs)
    for arr, copy in before:
        assert np.array_equal(arr, copy, equal_nan=arr.dtype.kind in "fc") \
            if arr.dtype.kind not in "OMV" else True, f"{desc} modified an input"


def name_is_kernel(desc):
    return desc[0] == "kernel"


# -- engines ---------------------------------------------------------------------------

def run_hypothesis(examples, seconds, seed):
    from hypothesis import HealthCheck, given, settings, strategies as st

    class HypothesisChooser(Chooser):
        def __init__(self, data):
            self.data = data

        def choose(self, n):
            return self.data.draw(st.integers(0, n - 1)) if n > 1 else 0

    from hypothesis import seed as seeded

    deadline = time.monotonic() + seconds if seconds else None
    count = [0]
    # hypothesis has no time budget: with --seconds, run rounds of ROUND
    # examples until the time is up. Each round draws fresh inputs; with a
    # seed, round k uses seed + k, so a run is reproducible (CI uses one).
    ROUND = 200
    per_run = examples if examples else ROUND

    def one_round(round_seed):
        @settings(max_examples=per_run, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def fuzz(data):
            count[0] += 1
            one_input(HypothesisChooser(data))
        if round_seed is not None:
            fuzz = seeded(round_seed)(fuzz)
        fuzz()

    rounds = 0
    while True:
        one_round(None if seed is None else seed + rounds)
        rounds += 1
        if deadline is None or examples or time.monotonic() >= deadline:
            break
    return count[0]


def run_atheris(examples, seconds):
    import atheris

    class BytesChooser(Chooser):
        def __init__(self, fdp):
            self.fdp = fdp

        def choose(self, n):
            return self.fdp.ConsumeIntInRange(0, n - 1) if n > 1 else 0

    def test_one(data):
        one_input(BytesChooser(atheris.FuzzedDataProvider(data)))

    argv = [sys.argv[0]]
    if seconds:
        argv.append(f"-max_total_time={int(seconds)}")
    if examples:
        argv.append(f"-runs={examples}")
    atheris.instrument_all()        # coverage of fastjac's Python layers guides the search
    atheris.Setup(argv, test_one)
    atheris.Fuzz()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time budget (default 30 s when --examples is not given)")
    parser.add_argument("--examples", type=int, default=None, help="number of inputs")
    parser.add_argument("--seed", type=int, default=None,
                        help="hypothesis: seed of the first round (reproducible runs)")
    args = parser.parse_args(argv)
    if args.seconds is None and args.examples is None:
        args.seconds = 30.0
    started = time.monotonic()
    if args.engine == "atheris":
        run_atheris(args.examples, args.seconds)
        return 0
    n = run_hypothesis(args.examples, args.seconds, args.seed)
    print(f"fuzz_api: {n} inputs in {time.monotonic() - started:.1f} s, no failure "
          f"(fastjac {fastjac.__version__}, engine hypothesis)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
