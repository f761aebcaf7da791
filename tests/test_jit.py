"""Compiled fused loops for large expressions (_jit.py).

The oracle for every number is a closed form written here in NumPy; on top
of that, compiled code must give *the same bits* as the block interpreter
(it runs the same operations in the same order), on one thread and on
several. Compilation needs a C compiler: the machine that built fastjac has
one; without one, the interpreter runs (tested in a subprocess).
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastjac as fj
from fastjac import _expr, _jit, _operators

import oracle

w_, x_, z_ = fj.var("w"), fj.var("x"), fj.var("z")
N = 70_001                      # above _jit.JIT_MIN_SIZE, not a multiple of the block


@pytest.fixture
def jit_mode():
    """Set the compile mode for one test, then restore the environment's."""
    yield _expr._set_jit
    _expr._set_jit(None)


def data(dtype, n=N, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.25, 2.0, n).astype(dtype)
    x = rng.uniform(0.25, 2.0, n).astype(dtype)
    # ties and kinks where the conventions matter: max/min at a tie, relu at 0
    w[:50] = x[:50]
    x[50:60] = 1.0
    if nan:
        w[60], x[61] = np.nan, np.nan
    return w, x


# name, expression, variables, value, {wrt: derivative} (closed forms of the spec)
CASES = [
    ("max_div", fj.maximum(w_ * x_ + 3, 0) - w_ / x_,
     lambda w, x: np.maximum(w * x + 3, 0) - w / x,
     {"w": lambda w, x: np.where(w * x + 3 > 0, x, 0) - 1 / x,
      "x": lambda w, x: np.where(w * x + 3 > 0, w, 0) + w / x ** 2}),
    ("min_abs_relu", fj.minimum(w_, x_) * fj.abs(x_ - 1) + fj.relu(w_ - 1),
     lambda w, x: np.minimum(w, x) * np.abs(x - 1) + np.maximum(w - 1, 0),
     {"w": lambda w, x: np.where(w < x, 1, np.where(w == x, 0.5, 0)) * np.abs(x - 1)
      + (w > 1),
      "x": lambda w, x: np.where(x < w, 1, np.where(w == x, 0.5, 0)) * np.abs(x - 1)
      + np.minimum(w, x) * np.sign(x - 1)}),
    ("log1p", fj.log1p(w_) * x_ + fj.sqrt(x_),
     lambda w, x: np.log1p(w) * x + np.sqrt(x),
     {"w": lambda w, x: x / (1 + w),
      "x": lambda w, x: np.log1p(w) + 0.5 / np.sqrt(x)}),
    ("sqrt_log_cmp", fj.sqrt(x_) * fj.log(w_) + (w_ > x_) - fj.square(w_) / 4,
     lambda w, x: np.sqrt(x) * np.log(w) + (w > x) - w * w / 4,
     {"w": lambda w, x: np.sqrt(x) / w - w / 2,
      "x": lambda w, x: 0.5 / np.sqrt(x) * np.log(w)}),
]


def attached():
    """Programs given compiled code so far: compiled, or the code of an equal
    program compiled before (an earlier test may have compiled it)."""
    s = _jit.status()
    return s["compiled"] + s["reused"] + s["loaded"]


def interpreted_and_compiled(jit_mode, expr, wrt, w, x):
    """(value, derivative) by the interpreter, then by compiled code (which
    must have been attached: compiled, reused or loaded)."""
    jit_mode("never")
    interpreted = run(fj.compile(expr), wrt, w, x)
    jit_mode("always")
    before = attached()
    fused = run(fj.compile(expr), wrt, w, x)
    assert _jit.status()["error"] is None
    assert attached() == before + 1                 # runs compiled code
    return interpreted, fused


def run(compiled, wrt, w, x):
    value = np.empty_like(w)
    deriv = np.empty_like(w)
    args = [{"w": w, "x": x}[name] for name in compiled.variables]
    compiled.kernel(wrt, value=True)(*args, value, deriv)
    return value, deriv


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compiled_matches_closed_form_and_interpreter(case, dtype, jit_mode):
    name, expr, value_f, derivs = case
    w, x = data(dtype, nan=True)        # NaN: the same bits too, checked below
    ok = slice(62, None)                # the closed forms: where all is finite
    for wrt, deriv_f in derivs.items():
        interpreted, fused = interpreted_and_compiled(jit_mode, expr, wrt, w, x)
        w64, x64 = w.astype(np.float64), x.astype(np.float64)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(fused[0][ok], value_f(w64, x64)[ok], rtol=tol, atol=tol)
        np.testing.assert_allclose(fused[1][ok], deriv_f(w64, x64)[ok], rtol=tol, atol=tol)
        assert np.isnan(fused[0][60:62]).all() and np.isnan(fused[1][60:62]).all()
        np.testing.assert_array_equal(fused[0], interpreted[0])
        np.testing.assert_array_equal(fused[1], interpreted[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("offsets", [(0, 0), (3, 3), (0, 1)],
                         ids=["aligned", "same-offset", "different-offsets"])
def test_streamed_outputs_at_any_offset(dtype, offsets, jit_mode):
    # Outputs of STREAM_BYTES and more are written with non-temporal stores:
    # straight from the loop when both start at the same place in a 64-byte
    # line (after a head of single elements), through the block loop when
    # they do not. Every path gives the interpreter's bits and the closed
    # form -- including d(w/x)/dx where x*x is not a normal number, taken
    # as -(w/x)/x.
    itemsize = np.dtype(dtype).itemsize
    n = _expr.STREAM_BYTES // itemsize + 37
    w, x = data(dtype, n=n)
    # x * x below the normal range (with a w small enough for a finite
    # derivative), x * x beyond the largest float, x = 0
    tiny, small_w = (1e-155, 1e-10) if dtype == np.float64 else (1e-20, 1e-5)
    x[70:74] = [tiny, -tiny, 1 / tiny, 0.0]
    w[70:72] = small_w
    expr = fj.maximum(w_ * x_ + 3, 0) - w_ / x_

    def outputs():
        buffers = [np.full(n + 8, -7.0, dtype) for _ in offsets]
        return buffers, [b[k:k + n] for b, k in zip(buffers, offsets)]

    jit_mode("never")
    _, (value_i, deriv_i) = outputs()
    fj.compile(expr).kernel("x", value=True)(w, x, value_i, deriv_i)
    jit_mode("always")
    buffers, (value, deriv) = outputs()
    fj.compile(expr).kernel("x", value=True)(w, x, value, deriv)
    np.testing.assert_array_equal(value, value_i)
    np.testing.assert_array_equal(deriv, deriv_i)
    for b, k in zip(buffers, offsets):          # nothing written outside the outputs
        assert (b[:k] == -7).all() and (b[k + n:] == -7).all()
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        expect = np.where(w64 * x64 + 3 > 0, w64, 0) + (w64 / x64) / x64
    finite = np.isfinite(expect) & (np.abs(expect) < np.finfo(dtype).max)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(deriv[finite], expect[finite], rtol=tol,
                               atol=np.finfo(dtype).tiny)
    assert finite[70:73].all() and np.isinf(deriv[73])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sums_scalars_and_threads(dtype, jit_mode):
    # a reduction stage (SUM), a scalar variable and constants; the sums are
    # added block by block in the interpreter's order, so the bits agree, and
    # do not depend on the number of threads
    expr = fj.sum(fj.maximum(w_ * z_, 0.5)) * x_ + w_ / z_
    w, x = data(dtype)
    z = np.asarray(1.5, dtype)

    def grads():
        c = fj.compile(expr)
        return [c.value_and_jacobian(v, w=w, x=x, z=z) for v in ("x", "z")]

    jit_mode("never")
    interpreted = grads()
    jit_mode("always")
    before = fj.set_num_threads(1)
    try:
        one = grads()
        fj.set_num_threads(2)
        two = grads()
    finally:
        fj.set_num_threads(before)
    for got in (one, two):
        for (v, j), (vi, ji) in zip(got, interpreted):
            np.testing.assert_array_equal(v, vi)
            np.testing.assert_array_equal(np.asarray(j), np.asarray(ji))
    # closed form: y_i = S x_i + w_i / z with S = sum(max(w z, 0.5))
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    S = np.sum(np.maximum(w64 * 1.5, 0.5))
    tol = 1e-11 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(one[0][0], S * x64 + w64 / 1.5, rtol=tol)
    np.testing.assert_allclose(one[0][1], np.full(w.shape, S), rtol=tol)   # diag: S
    dS_dz = np.sum(np.where(w64 * 1.5 > 0.5, w64, 0))
    np.testing.assert_allclose(np.asarray(one[1][1]).ravel(),
                               dS_dz * x64 - w64 / 1.5 ** 2, rtol=tol)


OPERATORS = [op for op in _operators.OPERATORS if op.name != "identity"]


def operands(op, dtype, n=N):
    """w, x in op's domain (x > 0: it multiplies the result), with special
    values in the first 16 elements: NaN, infinities, zeros, sin and cos's
    libm range (|x| >= 2**17), huge and tiny numbers."""
    rng = np.random.default_rng(7)
    low = 0.25 if op.real_above is not None or op.name == "power" else -3.0
    w = rng.uniform(low, 2.0, n).astype(dtype)
    x = rng.uniform(0.25, 2.0, n).astype(dtype)
    w[:16] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e5, -2e5, 1e30, -1e30, 1e-30, 700.0,
              -700.0, 1.0, -1.0, 2.0, 0.5]
    x[:16] = [1.0, 2.0, 0.5, np.nan, np.inf, 1.5, 0.0, 3.0, 1.0, -1.0, 0.25, 2.0, 1.0, 1.0,
              2.0, 0.5]
    w[100:110] = x[100:110]             # ties: maximum, minimum
    return w, x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", OPERATORS, ids=[op.name for op in OPERATORS])
def test_every_operator_compiles_with_the_interpreters_bits(op, dtype, jit_mode):
    """Every operator runs compiled inside arithmetic: computed in the loop
    (op.jit), or handed to the interpreter's exec_block of the same level
    (the vectorised functions, the costlier derivatives). Both give the
    interpreter's bits, special values included; the numbers are checked
    against the oracle's closed forms besides."""
    f = getattr(fj.expr, op.name)
    binary = len(op.derivatives) == 2
    expr = (f(w_, x_) if binary else f(w_)) * x_ + w_
    w, x = operands(op, dtype)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    y = oracle.forward(op.name, w64, x64) if binary else oracle.forward(op.name, w64)
    dw = oracle.derivative(op.name, w64, x64, 0) if binary else oracle.derivative(op.name, w64)
    with np.errstate(all="ignore"):     # the special values
        expected = {"w": dw * x64 + 1,
                    "x": (oracle.derivative(op.name, w64, x64, 1) * x64 if binary else 0) + y}
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for wrt in ("w", "x"):
        interpreted, fused = interpreted_and_compiled(jit_mode, expr, wrt, w, x)
        np.testing.assert_array_equal(fused[0], interpreted[0])
        np.testing.assert_array_equal(fused[1], interpreted[1])
        with np.errstate(all="ignore"):
            value = y * x64 + w64
        ok = np.isfinite(value) & np.isfinite(expected[wrt])
        ok[:110] = False                    # special values, ties: the bits above
        np.testing.assert_allclose(fused[0][ok], value[ok], rtol=tol, atol=tol)
        np.testing.assert_allclose(fused[1][ok], expected[wrt][ok], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_interpreted_instructions_share_the_blocks_with_sums_and_threads(dtype, jit_mode):
    """A program mixing compiled and interpreted instructions with sums, a
    scalar and two outputs: the same bits as the interpreter on one thread
    and on two (the chunks, blocks and per-block sums are the interpreter's)."""
    w, x = data(dtype)
    loss = fj.compile(fj.mean(fj.softplus(w_ * x_ - 1.5) * fj.sin(x_) + 0.25 * fj.tanh(w_)))
    results = {}
    before = fj.get_num_threads()
    try:
        for mode in ("never", "always"):
            jit_mode(mode)
            for threads in (1, 2):
                fj.set_num_threads(threads)
                results[mode, threads] = loss.value_and_jacobian(["w", "x"], w=w, x=x)
    finally:
        fj.set_num_threads(before)
    v0, (gw0, gx0) = results["never", 1]
    for key, (v, (gw, gx)) in results.items():
        assert v == v0, key
        np.testing.assert_array_equal(gw, gw0)
        np.testing.assert_array_equal(gx, gx0)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    z = w64 * x64 - 1.5
    s = 1 / (1 + np.exp(-z))
    expected = np.mean(np.logaddexp(0, z) * np.sin(x64) + 0.25 * np.tanh(w64))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(v0, expected, rtol=tol)
    np.testing.assert_allclose(gw0, (s * x64 * np.sin(x64) + 0.25 / np.cosh(w64) ** 2) / len(w),
                               rtol=tol, atol=tol / len(w))
    np.testing.assert_allclose(gx0, (s * w64 * np.sin(x64) + np.logaddexp(0, z) * np.cos(x64))
                               / len(w), rtol=tol, atol=tol / len(w))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_expm1_values_compile_and_its_derivative_goes_to_the_interpreter(dtype, jit_mode):
    # expm1's value is libm's in both; its derivative is exp, _vecmath.h's,
    # which the compiled code hands to the interpreter's exec_block
    w, x = data(dtype, nan=True)
    expr = fj.expm1(w_) * x_ - fj.log1p(x_)
    jit_mode("never")
    interpreted = fj.compile(expr).value(w=w, x=x)
    jit_mode("always")
    before = attached()
    fused = fj.compile(expr).value(w=w, x=x)
    assert _jit.status()["error"] is None and attached() == before + 1
    np.testing.assert_array_equal(fused, interpreted)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    tol = 1e-14 if dtype == np.float64 else 2e-6
    # (a difference that can cancel: an absolute tolerance on the scale of its terms)
    np.testing.assert_allclose(fused[62:], (np.expm1(w64) * x64 - np.log1p(x64))[62:], rtol=tol,
                               atol=8 * tol)
    assert np.isnan(fused[60:62]).all()
    before = attached()
    value, deriv = run(fj.compile(expr), "w", w, x)
    assert attached() == before + 1
    source = _jit.c_source(programs_of(fj.compile(expr), "w")[0], dtype == np.float64, True)
    assert "fj_block(" in source                    # exp' = exp: the interpreter's
    np.testing.assert_array_equal(value, interpreted)
    np.testing.assert_allclose(deriv[62:], (np.exp(w64) * x64)[62:], rtol=tol)


def test_auto_mode_compiles_only_for_large_arrays(jit_mode):
    jit_mode("auto")
    c = fj.compile(w_ * x_ - fj.relu(x_))
    before = attached()
    w, x = data(np.float64, n=_jit.JIT_MIN_SIZE - 1)
    run(c, "x", w, x)
    assert attached() == before
    w, x = data(np.float64, n=_jit.JIT_MIN_SIZE)
    value, deriv = run(c, "x", w, x)
    assert attached() == before + 1
    np.testing.assert_array_equal(deriv, w - (x > 0))
    # compiled once: later calls of any size reuse it
    run(c, "x", *data(np.float64, n=10))
    run(c, "x", w, x)
    assert attached() == before + 1


def test_threads_racing_to_the_first_call_compile_once(jit_mode):
    jit_mode("always")
    c = fj.compile(fj.minimum(w_, 1.0) * x_ + w_)
    w, x = data(np.float64)
    expected = np.where(w < 1, 1.0, np.where(w == 1, 0.5, 0)) * x + 1
    before = _jit.status()["compiled"]
    results, errors = [None] * 6, []
    barrier = threading.Barrier(6)

    def work(i):
        try:
            barrier.wait()
            results[i] = run(c, "w", w, x)[1]
        except Exception as exc:          # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _jit.status()["compiled"] == before + 1
    for r in results:
        np.testing.assert_array_equal(r, expected)


def programs_of(compiled, wrt):
    """The Programs of a compiled expression's plans, after a call."""
    run(compiled, wrt, *data(np.float64, n=8))
    programs = [sp.program for plan in compiled._plans.values() for stage in plan.stages
                for sp in stage if hasattr(sp, "program")]
    assert programs
    return programs


def test_c_source_hands_vectorised_functions_to_the_interpreter():
    # sin is _vecmath.h's: the interpreter's exec_block computes it, and the
    # addition around it is a loop of this C
    source = _jit.c_source(programs_of(fj.compile(fj.sin(w_) + x_), "w")[0], True, True)
    assert "fj_block(" in source and "F(v_add)" in source
    source = _jit.c_source(programs_of(fj.compile(fj.sqrt(w_) + x_), "w")[0], True, True)
    assert "fj_block" not in source and "F(m_sqrt)" in source


def test_too_many_registers_for_the_stack_stay_interpreted(jit_mode, monkeypatch):
    monkeypatch.setattr(_jit, "MAX_BLOCKS", 1)
    c = fj.compile(fj.exp(w_) * x_ + fj.tanh(x_) * w_)
    with pytest.raises(_jit.Unsupported, match="blocks of registers"):
        _jit.c_source(programs_of(c, "w")[0], True, True)


def _child(env, code):
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


CHILD = """
    import numpy as np, fastjac as fj
    from fastjac import _jit
    w, x = np.linspace(0.5, 2, 70001), np.linspace(2, 0.5, 70001)
    k = fj.compile(fj.maximum(fj.var("w") * fj.var("x"), 1.0)).kernel("w")
    out = np.empty_like(w)
    k(w, x, out)
    assert np.array_equal(out, np.where(w * x > 1, x, np.where(w * x == 1, 0.5 * x, 0)))
    s = _jit.status()
    print(s["compiled"], s["error"] is not None)
"""


def test_without_a_compiler_the_interpreter_runs():
    out = _child({"CC": "/nonexistent/cc", "FASTJAC_JIT": "1"}, CHILD)
    assert out.split() == ["0", "True"]


def test_environment_switches_compilation_off():
    out = _child({"FASTJAC_JIT": "0"}, CHILD)
    assert out.split() == ["0", "False"]


PICKLED = """
    import pickle, sys, numpy as np
    f, k = pickle.loads(sys.stdin.buffer.read())
    w, x = np.linspace(0.5, 2, 70001), np.linspace(2, 0.5, 70001)
    out = np.empty_like(w)
    np.save(sys.argv[1], np.stack([f.jacobian("w", w=w, x=x), k(w, x, out)]))
"""


@pytest.mark.parametrize("child_jit", ["0", "1"])
def test_pickled_expression_is_rebuilt_not_its_code(tmp_path, child_jit, jit_mode):
    """Compiled code is an address in one process: a pickle carries the
    expression, and the other process rebuilds (and compiles) its own."""
    import pickle
    jit_mode("always")
    f = fj.compile(fj.maximum(w_ * x_, 1.0) - x_ / w_)
    w, x = np.linspace(0.5, 2, 70001), np.linspace(2, 0.5, 70001)
    f.jacobian("w", w=w, x=x)
    k = f.kernel("w")
    k(w, x, np.empty_like(w))
    assert any(sp.program.jit_f64 > 0 for plan in f._plans.values() for stage in plan.stages
               for sp in stage if hasattr(sp, "program")) or _jit.status()["error"]
    blob = pickle.dumps((f, k))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PICKLED), str(tmp_path / "r.npy")],
                          input=blob, capture_output=True, timeout=300,
                          env={**os.environ, "FASTJAC_JIT": child_jit})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    expected = np.where(w * x > 1, x, np.where(w * x == 1, 0.5 * x, 0.0)) + x / w**2
    got = np.load(tmp_path / "r.npy")
    np.testing.assert_allclose(got[0], expected, rtol=1e-14)
    np.testing.assert_array_equal(got[1], got[0])
    program = next(sp.program for plan in f._plans.values() for stage in plan.stages
                   for sp in stage if hasattr(sp, "program"))
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(program)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_row_programs_compiled_give_the_interpreters_bits(dtype, jit_mode):
    """A loss's per-row program runs as compiled C in the row pass (relu,
    abs, minimum: all in the loop; softplus: through the interpreter's
    block function): the same bits as the interpreter, for the value,
    gradients, Hessian diagonal and hvp."""
    X_, wv_, y_, b_, s_ = (fj.var(n) for n in ("X", "w", "y", "b", "s"))
    rng = np.random.default_rng(2)
    X = rng.standard_normal((N, 13)).astype(dtype)
    values = {"X": X, "w": (rng.standard_normal(13) * 0.3).astype(dtype),
              "y": rng.standard_normal(N).astype(dtype), "s": rng.random(N).astype(dtype),
              "b": 0.1}
    r = X_ @ wv_ + b_ - y_
    a = abs(r)
    m = fj.minimum(a, 1.0)
    z = X_ @ wv_ + b_
    logistic = s_ * (fj.softplus(z) - y_ * z)     # softplus: the interpreter's, called
    for expr in (s_ * (y_ - fj.relu(z)) ** 2, s_ * m * (a - 0.5 * m), logistic):
        results = []
        for mode in ("never", "always"):
            jit_mode(mode)
            before = attached()
            loss = fj.compile(fj.mean(expr))
            results.append((loss.value_and_jacobian(["w", "b"], **values),
                            loss.hessian_diagonal("w", **values),
                            loss.hvp("w", values["w"], **values)))
            if mode == "always":
                assert _jit.status()["error"] is None
                assert attached() > before              # the row programs run compiled
        (v0, (g0, b0)), h0, p0 = results[0]
        (v1, (g1, b1)), h1, p1 = results[1]
        assert v0 == v1 and b0 == b1
        for x, y in ((g0, g1), (h0, h1), (p0, p1)):
            np.testing.assert_array_equal(x, y)
