"""examples/logistic_newton.py end to end in its small mode: every fit
agrees with scikit-learn (the independent oracle), and the plot is saved."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "logistic_newton.py"


def _env():
    env = dict(os.environ)
    # the fastjac under test (an installed one, or the source tree of this checkout)
    import fastjac
    src = str(Path(fastjac.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


def test_logistic_newton_small_agrees_with_sklearn(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    png = tmp_path / "convergence.png"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--small", "--plot", str(png)],
                          capture_output=True, text=True, timeout=600, env=_env(),
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # three problems: two logistic (breast cancer, synthetic) and one Poisson
    assert out.count("max relative difference from scikit-learn") == 3, out
    # a fastjac row: label, iterations, passes, time/iter, total, max|grad|, difference
    rows = [line.split() for line in out.splitlines() if line.startswith("  fastjac ")]
    assert len(rows) == 6, out                          # Newton-CG and L-BFGS, 3 problems
    for row in rows:
        label = " ".join(row[:-8])
        iters, passes, gmax, diff = int(row[-8]), int(row[-7]), float(row[-2]), float(row[-1])
        assert diff <= 1e-6, (label, diff)
        assert iters >= 1 and passes >= iters, row
        if "Newton" in label:
            assert gmax <= 1e-10, row
    newton = [int(r[-8]) for r in rows if "Newton" in " ".join(r)]
    lbfgs = [int(r[-8]) for r in rows if "L-BFGS" in " ".join(r)]
    # Newton with exact Hessian products converges in fewer iterations
    assert len(newton) == len(lbfgs) == 3
    assert all(a < b for a, b in zip(newton, lbfgs)), (newton, lbfgs)
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_objective_matches_numpy_and_finite_differences():
    """The example's joint (w, b) value, gradient and Hessian product, against
    NumPy formulas written here and central differences of them."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("logistic_newton", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(3)
    N, n, alpha = 200, 5, 0.05
    X = rng.standard_normal((N, n))
    for kind, y in (("logistic", (rng.random(N) < 0.4).astype(float)),
                    ("poisson", rng.poisson(2.0, N).astype(float))):
        obj = mod.Objective(mod.compile_loss(kind), X, y, alpha=alpha)
        theta = rng.standard_normal(n + 1) * 0.3

        def f(t):
            z = X @ t[:n] + t[n]
            e = np.logaddexp(0, z) if kind == "logistic" else np.exp(z)
            return np.mean(e - y * z) + 0.5 * alpha * t[:n] @ t[:n]

        def grad(t):
            z = X @ t[:n] + t[n]
            d = (1 / (1 + np.exp(-z)) if kind == "logistic" else np.exp(z)) - y
            return np.append(X.T @ d / N + alpha * t[:n], np.mean(d))

        value, g = obj.value_and_grad(theta)
        assert value == pytest.approx(f(theta), rel=1e-13)
        np.testing.assert_allclose(g, grad(theta), rtol=1e-12, atol=1e-15)
        h = 1e-6
        fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(n + 1)])
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
        p = rng.standard_normal(n + 1)
        fd_hp = (grad(theta + h * p) - grad(theta - h * p)) / (2 * h)
        np.testing.assert_allclose(obj.hessian_product(theta)(p), fd_hp, rtol=1e-6, atol=1e-8)
        assert obj.passes == 1 + 2 + 1      # value+grad, h_bb and h_wb, one product


def test_newton_cg_converges_without_sklearn():
    """The example's Newton-CG on a logistic problem without scikit-learn: the
    gradient at its answer is below its tolerance, by NumPy's formula."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("logistic_newton", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    X, y = mod.synthetic_logistic(3000, 8, seed=5)
    obj = mod.Objective(mod.compile_loss("logistic"), X, y, alpha=1e-3)
    theta, history, iters = mod.newton_cg(obj, np.zeros(9))
    z = X @ theta[:8] + theta[8]
    d = 1 / (1 + np.exp(-z)) - y
    g = np.append(X.T @ d / 3000 + 1e-3 * theta[:8], np.mean(d))
    assert np.max(np.abs(g)) <= 1e-9
    assert history[-1] <= mod.TOL and iters == len(history) - 1 and iters <= 15
    with pytest.raises(ValueError, match="kind must be"):
        mod.compile_loss("hinge")
