"""Train a ReLU neuron by gradient descent with fastjac gradients.

The model is the neuron of section 6 of the specification,
a(x) = max(0, w . x + b), fitted to scikit-learn's bundled diabetes data
(442 patients, 10 features; it ships inside the package, no network) with
the squared-error loss C(w, b) = (1/N) sum_i (y_i - a(x_i))**2. Every step
calls ``fastjac.neuron_gradient``: one fused pass over the rows of X gives
dC/dw, dC/db and C.

It saves the loss curve as a PNG and prints the time per step next to the
same loop written with JAX (jax.jit of jax.value_and_grad) and with PyTorch
(autograd), each in float64, when they are installed. They may live in
another interpreter (a benchmark virtualenv, say): ``--rivals-python PATH``
runs them there, on the same data, in a subprocess.

    pip install "fastjac[examples]"
    python examples/train_neuron.py                 # -> neuron_loss.png
    python examples/train_neuron.py --rivals-python /path/to/venv/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def load_data():
    """Diabetes features standardised; the target scaled to [0, 1] (a ReLU
    output is never negative)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = (y - y.min()) / (y.max() - y.min())
    return np.ascontiguousarray(X, dtype=np.float64), y.astype(np.float64)


def initial_params(n):
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 0.1, n), 0.5      # b > 0: the neuron starts active


def train_fastjac(X, y, w, b, steps, lr):
    import fastjac

    w = w.copy()
    gw = np.empty_like(w)
    losses = np.empty(steps)
    for step in range(steps):
        _, gb, loss = fastjac.neuron_gradient(X, y, w, b, out=gw, return_loss=True)
        losses[step] = loss
        w -= lr * gw
        b -= lr * gb
    return w, b, losses


def time_per_step(run, steps):
    run(min(steps, 20))                                   # warm-up (and JIT)
    t0 = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t0) / steps


# -- rivals (possibly in another interpreter) --------------------------------------

def rival_jax(X, y, w0, b0, steps, lr):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def loss(params):
        w, b = params
        return jnp.mean((yj - jax.nn.relu(Xj @ w + b)) ** 2)

    @jax.jit
    def step(params):
        value, (gw, gb) = jax.value_and_grad(loss)(params)
        w, b = params
        return (w - lr * gw, b - lr * gb), value

    def run(k):
        params = (jnp.asarray(w0), jnp.asarray(b0))
        value = None
        for _ in range(k):
            params, value = step(params)
        jax.block_until_ready(params)
        return float(value)

    return time_per_step(run, steps), run(steps), f"jax {jax.__version__}"


def rival_torch(X, y, w0, b0, steps, lr):
    import torch

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def run(k):
        w = torch.tensor(w0, requires_grad=True)
        b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
        value = None
        for _ in range(k):
            loss = torch.mean((yt - torch.relu(Xt @ w + b)) ** 2)
            gw, gb = torch.autograd.grad(loss, (w, b))
            with torch.no_grad():
                w -= lr * gw
                b -= lr * gb
            value = loss
        return float(value)

    return time_per_step(run, steps), run(steps), f"torch {torch.__version__}"


def run_rivals(npz_path, steps, lr):
    """{name: [seconds per step, final loss, version] or a note}, as JSON on stdout."""
    d = np.load(npz_path)
    results = {}
    for name, fn in (("JAX", rival_jax), ("PyTorch", rival_torch)):
        try:
            results[name] = list(fn(d["X"], d["y"], d["w"], float(d["b"]), steps, lr))
        except ImportError as exc:
            results[name] = f"skipped: {exc.name or exc} is not installed in {sys.executable}"
        except Exception as exc:                       # noqa: BLE001 - report, go on
            results[name] = f"failed: {type(exc).__name__}: {exc}"
    return results


def rivals(X, y, w0, b0, steps, lr, python):
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        return run_rivals_inline(X, y, w0, b0, steps, lr)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, X=X, y=y, w=w0, b=b0)
        proc = subprocess.run([python, os.path.abspath(__file__), "--rivals-only", path,
                               "--steps", str(steps), "--lr", str(lr)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            note = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"JAX": f"skipped: {python} failed ({note})",
                    "PyTorch": f"skipped: {python} failed ({note})"}
        return json.loads(proc.stdout.strip().splitlines()[-1])


def run_rivals_inline(X, y, w0, b0, steps, lr):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, X=X, y=y, w=w0, b=b0)
        return run_rivals(path, steps, lr)


# -- main ---------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--png", default="neuron_loss.png", help="where to save the loss curve")
    p.add_argument("--rivals-python", default=os.environ.get("FASTJAC_RIVALS_PYTHON"),
                   help="interpreter with jax/torch (default: this one)")
    p.add_argument("--no-rivals", action="store_true")
    p.add_argument("--rivals-only", metavar="NPZ", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.rivals_only:
        print(json.dumps(run_rivals(args.rivals_only, args.steps, args.lr)))
        return 0

    import fastjac

    X, y = load_data()
    w0, b0 = initial_params(X.shape[1])
    w, b, losses = train_fastjac(X, y, w0, b0, args.steps, args.lr)
    print(f"diabetes data: N = {X.shape[0]} rows, n = {X.shape[1]} features")
    print(f"loss: {losses[0]:.5f} at step 0 -> {losses[-1]:.5f} after {args.steps} steps")
    print(f"w = {np.array2string(w, precision=3)}, b = {b:.4f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(args.steps), losses)
    ax.set_yscale("log")
    ax.set_xlabel("gradient descent step")
    ax.set_ylabel("C(w, b) = mean squared error")
    ax.set_title("ReLU neuron on the diabetes data (fastjac gradients)")
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"loss curve saved to {args.png}")

    t_fj = time_per_step(lambda k: train_fastjac(X, y, w0, b0, k, args.lr)[2][-1], args.steps)
    print(f"\ntime per step (gradient + update, float64, N = {X.shape[0]}):")
    print(f"  {'fastjac ' + fastjac.__version__:<22} {t_fj * 1e6:9.2f} us   "
          f"final loss {losses[-1]:.6f}")
    if args.no_rivals:
        return 0
    for name, res in rivals(X, y, w0, b0, args.steps, args.lr, args.rivals_python).items():
        if isinstance(res, str):
            print(f"  {name:<22} {res}")
        else:
            t, final, version = res
            print(f"  {version:<22} {t * 1e6:9.2f} us   final loss {final:.6f}   "
                  f"({t / t_fj:.1f}x fastjac's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
