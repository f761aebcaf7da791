"""fastjac.neuron_gradient: the single-neuron loss gradient of spec section 6.

Oracles: the closed form of the spec written here in NumPy, and central
finite differences of the loss in float64.
"""
import subprocess
import sys

import numpy as np
import pytest

import fastjac as fj

RNG = np.random.default_rng(2024)


def loss(X, y, w, b):
    return np.mean((y - np.maximum(X @ w + b, 0)) ** 2)


def closed_form(X, y, w, b):
    z = X @ w + b
    r = np.where(z > 0, z - y, 0.0)
    N = len(y)
    return (2 / N) * r @ X, (2 / N) * r.sum()


def data(N=257, n=6, dtype=np.float64):
    X = RNG.standard_normal((N, n))
    y = RNG.standard_normal(N)
    w = RNG.standard_normal(n)
    return X.astype(dtype), y.astype(dtype), w.astype(dtype), 0.3


def test_closed_form_and_loss():
    X, y, w, b = data()
    gw, gb, C = fj.neuron_gradient(X, y, w, b, return_loss=True)
    ew, eb = closed_form(X, y, w, b)
    np.testing.assert_allclose(gw, ew, rtol=1e-12, atol=1e-14)
    assert gb == pytest.approx(eb, rel=1e-12)
    assert C == pytest.approx(loss(X, y, w, b), rel=1e-12)
    assert gw.dtype == np.float64 and isinstance(gb, np.float64)


def test_finite_differences():
    X, y, w, b = data(N=101, n=4)
    gw, gb = fj.neuron_gradient(X, y, w, b)
    h = 1e-6
    fd = np.array([(loss(X, y, w + h * e, b) - loss(X, y, w - h * e, b)) / (2 * h)
                   for e in np.eye(4)])
    np.testing.assert_allclose(gw, fd, rtol=1e-6, atol=1e-8)
    assert gb == pytest.approx((loss(X, y, w, b + h) - loss(X, y, w, b - h)) / (2 * h),
                               rel=1e-6, abs=1e-8)


def test_float32_stays_float32():
    X, y, w, b = data(dtype=np.float32)
    gw, gb, C = fj.neuron_gradient(X, y, w, b, return_loss=True)
    assert gw.dtype == np.float32 and gb.dtype == np.float32 and C.dtype == np.float32
    ew, eb = closed_form(X.astype(np.float64), y.astype(np.float64), w.astype(np.float64), b)
    np.testing.assert_allclose(gw, ew, rtol=1e-4, atol=1e-5)


def test_threaded_size_and_row_tail():
    X, y, w, b = data(N=40_003, n=16)       # above the threading threshold, N % 4 == 3
    gw, gb = fj.neuron_gradient(X, y, w, b)
    ew, eb = closed_form(X, y, w, b)
    np.testing.assert_allclose(gw, ew, rtol=1e-11, atol=1e-13)
    assert gb == pytest.approx(eb, rel=1e-11)
    assert np.array_equal(fj.neuron_gradient(X, y, w, b)[0], gw)   # deterministic


def test_inactive_neuron_and_kink():
    X = np.array([[1.0, -1.0], [2.0, 0.5]])
    y = np.array([1.0, 2.0])
    gw, gb = fj.neuron_gradient(X, y, np.array([-5.0, 0.0]), -1.0)
    assert np.all(gw == 0) and gb == 0
    # z == 0 exactly on the second row: relu'(0) = 0, so only row 0 counts
    w = np.array([1.0, -4.0])
    gw, gb = fj.neuron_gradient(X, y, w, 0.0)
    z0 = 1.0 + 4.0
    np.testing.assert_allclose(gw, (2 / 2) * (z0 - 1.0) * X[0])


def test_layouts_formats_out():
    X, y, w, b = data(N=50, n=3)
    ew, _ = closed_form(X, y, w, b)
    dn = fj.neuron_gradient(X, y, w, b, format="dense")[0]
    dd = fj.neuron_gradient(X, y, w, b, format="dense", layout="denominator")[0]
    assert dn.shape == (1, 3) and dd.shape == (3, 1)
    np.testing.assert_allclose(dn.ravel(), ew, rtol=1e-12)
    np.testing.assert_allclose(dd.ravel(), ew, rtol=1e-12)
    pytest.importorskip("scipy.sparse")
    sp = fj.neuron_gradient(X, y, w, b, format="csr", layout="denominator")[0]
    assert sp.shape == (3, 1)
    np.testing.assert_allclose(sp.toarray().ravel(), ew, rtol=1e-12)
    out = np.empty(3)
    assert fj.neuron_gradient(X, y, w, b, out=out)[0] is out
    out2 = np.empty((3, 1))
    assert fj.neuron_gradient(X, y, w, b, format="dense", layout="denominator",
                              out=out2)[0] is out2
    with pytest.raises(ValueError, match=r"out has shape \(4,\) but the result has shape \(3,\)"):
        fj.neuron_gradient(X, y, w, b, out=np.empty(4))
    with pytest.raises(ValueError, match="dtype"):
        fj.neuron_gradient(X, y, w, b, out=np.empty(3, np.float32))


def test_non_contiguous_and_int_inputs():
    X, y, w, b = data(N=30, n=4)
    Xf = np.asfortranarray(X)
    np.testing.assert_allclose(fj.neuron_gradient(Xf, y, w, b)[0],
                               fj.neuron_gradient(X, y, w, b)[0], rtol=1e-14)
    Xi = (X * 10).astype(np.int64)
    gw, _ = fj.neuron_gradient(Xi, y, w, 1)
    assert gw.dtype == np.float64
    np.testing.assert_allclose(gw, closed_form(Xi.astype(float), y, w, 1.0)[0], rtol=1e-12)


def test_errors():
    X, y, w, b = data(N=10, n=3)
    with pytest.raises(ValueError, match="X must be 2-D"):
        fj.neuron_gradient(X[0], y, w, b)
    with pytest.raises(ValueError, match=r"y has shape \(9,\)"):
        fj.neuron_gradient(X, y[:9], w, b)
    with pytest.raises(ValueError, match=r"w has shape \(2,\)"):
        fj.neuron_gradient(X, y, w[:2], b)
    with pytest.raises(ValueError, match="b must be a scalar"):
        fj.neuron_gradient(X, y, w, np.ones(2))
    with pytest.raises(ValueError, match="no rows"):
        fj.neuron_gradient(X[:0], y[:0], w, b)
    with pytest.raises(TypeError, match="complex"):
        fj.neuron_gradient(X.astype(complex), y, w, b)
    with pytest.raises(ValueError, match="layout"):
        fj.neuron_gradient(X, y, w, b, layout="up")
    with pytest.raises(ValueError, match="format"):
        fj.neuron_gradient(X, y, w, b, format="full")


def test_example_trains_and_saves_the_loss_curve(tmp_path):
    # examples/train_neuron.py end to end, a few steps, no rivals
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "train_neuron.py"
    spec = importlib.util.spec_from_file_location("train_neuron", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    png = tmp_path / "loss.png"
    assert mod.main(["--steps", "30", "--png", str(png), "--no-rivals"]) == 0
    assert png.stat().st_size > 1000
    X, y = mod.load_data()
    w0, b0 = mod.initial_params(X.shape[1])
    _, _, losses = mod.train_fastjac(X, y, w0, b0, 30, 0.05)
    assert losses[-1] < losses[0]                       # gradient descent descends
    assert losses[0] == pytest.approx(loss(X, y, w0, b0), rel=1e-12)


def test_many_features():
    # more features than the local accumulator holds (64): accumulate in place
    X, y, w, b = data(N=203, n=70)
    gw, gb = fj.neuron_gradient(X, y, w, b)
    ew, eb = closed_form(X, y, w, b)
    np.testing.assert_allclose(gw, ew, rtol=1e-12, atol=1e-14)
    assert gb == pytest.approx(eb, rel=1e-12)


@pytest.mark.parametrize("n", [8, 9, 15, 16, 17, 24, 63, 64, 65])
@pytest.mark.parametrize("N", [1, 7, 8, 9, 1001])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_width_of_the_eight_row_path(n, N, dtype):
    # 8 <= n <= 64 runs eight rows at a time on 8-lane vectors (_neuron_rows.h),
    # with n % 8 features and N % 8 rows left over; 65 takes the scalar loop.
    X, y, w, b = data(N=N, n=n, dtype=dtype)
    gw, gb, C = fj.neuron_gradient(X, y, w, b, return_loss=True)
    X64, y64, w64 = X.astype(np.float64), y.astype(np.float64), w.astype(np.float64)
    ew, eb = closed_form(X64, y64, w64, b)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(gw, ew, rtol=tol, atol=tol)
    assert gb == pytest.approx(eb, rel=tol, abs=tol)
    assert C == pytest.approx(loss(X64, y64, w64, b), rel=tol, abs=tol)


@pytest.mark.parametrize("n", [6, 16])
def test_nan_in_an_active_row_propagates(n):
    X, y, w, b = data(N=33, n=n)
    w = np.abs(w)
    X = np.abs(X)                        # every row active: z > 0
    X[5, 2] = np.nan
    gw, gb, C = fj.neuron_gradient(X, y, w, b, return_loss=True)
    assert np.all(np.isnan(gw)) and np.isnan(gb) and np.isnan(C)


def test_the_neuron_needs_no_expression_module():
    # _neuron.pyx takes its checks from _checks.py, not from expr.py (which
    # imports _neuron: a cycle). With fastjac.expr unimportable and the
    # package's __init__ (which imports it) skipped, the neuron must still
    # import and run, error paths included.
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('fastjac'); package.__path__ = {list(fj.__path__)!r}\n"
        "sys.modules['fastjac'] = package; sys.modules['fastjac.expr'] = None\n"
        "import numpy as np\n"
        "from fastjac._neuron import neuron_gradient\n"
        "gw, gb = neuron_gradient([[1.0, 2.0]], [0.0], np.ones(2), 0, layout='denominator')\n"
        "try:\n"
        "    neuron_gradient(np.ones((1, 2)), [0.0], np.ones(2), 0.0, out=np.empty(3))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "print(gw.tolist(), float(gb))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "out has shape (3,) but the result has shape (2,); they must match",
        "[6.0, 12.0] 6.0"]
