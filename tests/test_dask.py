"""Dask arrays in, lazy Dask arrays out (issue 18; src/fastjac/_dask.py).

Oracles: closed-form derivatives written here with NumPy (d(a*b)/da = b,
d(a/b)/db = -a/b^2, d tanh = 1 - tanh^2 ...), summed with math.fsum where
a sum is involved; beside them, the NumPy path of fastjac on the same data,
which element-wise results must equal bit for bit. Sums are added by Dask
per block and then in a tree, so they match to rounding: float64 within
RTOL64 of the sum of |terms|, float32 within RTOL32.
"""
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastjac  # noqa: E402
from fastjac import _dask, _pool  # noqa: E402

RTOL64 = 1e-13
RTOL32 = 2e-6

rng = np.random.default_rng(18)

# op -> (d/da, d/db) closed forms (b None for unary)
FORMULAS = {
    "multiply": (lambda a, b: b + 0 * a, lambda a, b: a + 0 * b),
    "divide": (lambda a, b: 1 / b + 0 * a, lambda a, b: -a / b**2),
    "subtract": (lambda a, b: np.ones_like(a + b), lambda a, b: -np.ones_like(a + b)),
    "tanh": (lambda a, b: 1 - np.tanh(a) ** 2, None),
    "square": (lambda a, b: 2 * a, None),
}

# name -> (shape, chunks): ragged, one chunk, chunks of one element, empty
CHUNKINGS = {
    "ragged": ((11, 7), ((4, 4, 3), (5, 2))),
    "one-chunk": ((6, 5), ((6,), (5,))),
    "single-elements": ((3, 2), ((1, 1, 1), (1, 1))),
    "empty": ((0, 4), ((0,), (2, 2))),
}


def data(shape, dtype=np.float64):
    return rng.uniform(0.5, 1.5, shape).astype(dtype)


def np_of(x):
    return x.compute() if isinstance(x, da.Array) else x


def close(got, want, dtype):
    rtol = RTOL32 if np.dtype(dtype) == np.float32 else RTOL64
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * (np.abs(want).max(initial=0) + 1))


# -- jacobian --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("op", FORMULAS)
def test_jacobian_matches_the_formula_and_the_numpy_path(op, chunking, dtype):
    shape, chunks = CHUNKINGS[chunking]
    a, b = data(shape, dtype), data(shape, dtype)
    # b chunked differently from a: blockwise aligns them
    b_chunks = tuple(c[::-1] for c in chunks)
    da_a, da_b = da.from_array(a, chunks=chunks), da.from_array(b, chunks=b_chunks)
    d_a, d_b = FORMULAS[op]
    unary = d_b is None
    for wrt, formula in enumerate((d_a, d_b)[:1 if unary else 2]):
        args = (op, da_a) if unary else (op, da_a, da_b)
        got = fastjac.jacobian(*args, wrt=wrt)
        assert isinstance(got, da.Array) and got.dtype == dtype and got.shape == shape
        value = got.compute()
        assert value.dtype == dtype
        numpy_path = fastjac.jacobian(op, a, wrt=wrt) if unary else \
            fastjac.jacobian(op, a, b, wrt=wrt)
        np.testing.assert_array_equal(value, numpy_path)         # bit for bit
        close(value, formula(a.astype(np.float64), None if unary else b.astype(np.float64)),
              dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jacobian_mixed_dask_numpy_and_scalars(dtype):
    X = data((9, 6), dtype)
    w = data(6, dtype)
    dX = da.from_array(X, chunks=(4, 3))
    # a NumPy operand broadcast against a Dask one, either way round
    got = fastjac.jacobian("divide", w, dX, wrt=0).compute()
    close(got, np.broadcast_to(1 / X.astype(np.float64), X.shape), dtype)
    np.testing.assert_array_equal(got, fastjac.jacobian("divide", w, X, wrt=0))
    got = fastjac.jacobian("divide", dX, w, wrt=1).compute()
    close(got, -X.astype(np.float64) / w.astype(np.float64) ** 2, dtype)
    # a Python number stays weak: float32 stays float32
    got = fastjac.jacobian("divide", dX, 2.0, wrt=1)
    assert got.dtype == dtype
    close(got.compute(), -X.astype(np.float64) / 4, dtype)
    # a 0-d NumPy float64 is strong: the result is float64
    got = fastjac.jacobian("multiply", dX, np.float64(3.0), wrt=0)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.compute(), np.full(X.shape, 3.0))
    # a Dask per-row scale (N, 1) against a Dask row (n,): broadcast both ways
    s = data((9, 1), dtype)
    ds = da.from_array(s, chunks=((5, 4), (1,)))
    dw = da.from_array(w, chunks=((2, 4),))
    got = fastjac.jacobian("multiply", ds, dw, wrt=0).compute()
    np.testing.assert_array_equal(got, np.broadcast_to(w, (9, 6)))
    got = fastjac.jacobian("multiply", ds, dw, wrt=1).compute()
    np.testing.assert_array_equal(got, np.broadcast_to(s, (9, 6)))
    # integers become float64
    got = fastjac.jacobian("square", da.arange(5, chunks=2))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.compute(), 2.0 * np.arange(5))


def test_zero_dimensional_dask_arrays():
    z = da.from_array(np.array(2.0))
    got = fastjac.jacobian("divide", 3.0, z, wrt=1)
    assert isinstance(got, da.Array) and got.shape == ()
    assert got.compute() == -3.0 / 4.0


# -- sum_gradient -----------------------------------------------------------------------------

def _sum_cases(X, w, s, z):
    """(args, kwargs, closed form in float64) with X (N, n), w (n,), s (N, 1), z scalar."""
    X64, w64, s64 = (np.asarray(v, np.float64) for v in (X, w, s))
    return [
        (("multiply", w, X), {}, X64.sum(0)),                              # shared row
        (("multiply", w, X), dict(wrt=1), np.broadcast_to(w64, X.shape)),  # full shape
        (("multiply", w, X), dict(axis=0), X64.sum(0)),                    # diagonal
        (("multiply", w, X), dict(axis=-1), X64),                          # N x n J
        (("divide", X, w), dict(wrt=1), -(X64 / w64**2).sum(0)),
        (("multiply", s, X), {}, X64.sum(1, keepdims=True)),               # per-row scale
        (("multiply", s, X), dict(axis=1), X64.sum(1)),
        (("multiply", X, z), dict(wrt=1), X64.sum()),                      # scalar operand
        (("divide", X, z), dict(wrt=1, axis=0), -(X64 / z**2).sum(0)),
        ((None, X), {}, np.ones(X.shape)),
        ((None, X), dict(axis=(0, 1)), np.ones(X.shape)),
        (("tanh", X), dict(axis=0), 1 - np.tanh(X64) ** 2),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunks", [((4, 4, 3), (3, 4)), ((11,), (7,)), ((1,) * 11, (2, 5))],
                         ids=["ragged", "one-chunk", "thin"])
def test_sum_gradient_matches_the_closed_form(chunks, dtype):
    X, w, s = data((11, 7), dtype), data(7, dtype), data((11, 1), dtype)
    dX = da.from_array(X, chunks=chunks)
    dw = da.from_array(w, chunks=((3, 4),))                  # chunks unlike X's
    ds = da.from_array(s, chunks=((6, 5), (1,)))
    z = 1.25
    lazy_cases = _sum_cases(dX, dw, ds, z)
    for (args, kwargs, want), (np_args, _, _) in zip(lazy_cases, _sum_cases(X, w, s, z)):
        got = fastjac.sum_gradient(*args, **kwargs)
        assert isinstance(got, da.Array), (args[0], kwargs)
        numpy_path = fastjac.sum_gradient(*np_args, **kwargs)
        assert got.shape == np.shape(numpy_path) and got.dtype == dtype, (args[0], kwargs)
        value = got.compute()
        assert value.dtype == dtype and value.shape == np.shape(want)
        close(value, want, dtype)
        close(value, numpy_path, dtype)


def test_sum_gradient_mixed_numpy_operand_and_middle_axes():
    T = data((4, 5, 6))
    k = data((4, 1, 6))
    dT = da.from_array(T, chunks=(3, 2, 4))
    got = fastjac.sum_gradient("multiply", k, dT, axis=1)          # NumPy k, Dask T
    close(got.compute(), T.sum(1), np.float64)
    got = fastjac.sum_gradient("multiply", dT, k, wrt=1)           # the gradient, shaped like k
    assert got.shape == (4, 1, 6)
    close(got.compute(), T.sum(1, keepdims=True), np.float64)


def test_sum_gradient_one_chunk_is_bit_identical():
    X, w = data((50, 8)), data(8)
    for args, kw in [(("multiply", w, da.from_array(X)), {}),
                     (("divide", da.from_array(X), 3.0), dict(wrt=1))]:
        got = fastjac.sum_gradient(*args, **kw).compute()
        np_args = [np_of(x) for x in args]
        np.testing.assert_array_equal(got, fastjac.sum_gradient(*np_args, **kw))


def test_sum_gradient_of_empty_arrays():
    X = da.zeros((0, 3), chunks=(1, 2))
    got = fastjac.sum_gradient("multiply", da.ones(3, chunks=2), X).compute()
    np.testing.assert_array_equal(got, np.zeros(3))
    got = fastjac.sum_gradient("multiply", X, 2.0, wrt=1).compute()
    assert got == 0.0
    assert fastjac.jacobian("exp", X).compute().shape == (0, 3)


def test_a_large_batch_in_many_chunks():
    # chunks of 10^5 elements: fastjac's threaded, one-pass paths inside tasks
    X = data((40_000, 10))
    dX = da.from_array(X, chunks=(10_000, 10))
    w = data(10)
    close(fastjac.sum_gradient("multiply", w, dX).compute(), X.sum(0), np.float64)
    np.testing.assert_array_equal(fastjac.jacobian("log", dX).compute(), 1 / X)


# -- compiled expressions --------------------------------------------------------------------

x_, y_ = fastjac.var("x"), fastjac.var("y")
ELEMENTWISE = fastjac.compile(fastjac.maximum(x_ * y_ + 3, 0) - x_ / y_)
SUMMED = fastjac.compile(fastjac.sum(fastjac.tanh(x_ * y_) + 3))


def _expr_oracles(x, y):
    """(value, d/dx, d/dy) in closed form, float64: elementwise, then summed."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    t = np.tanh(x * y)
    return ((np.maximum(x * y + 3, 0) - x / y, y * (x * y + 3 > 0) - 1 / y,
             x * (x * y + 3 > 0) + x / y**2),
            (np.sum(t + 3), (1 - t**2) * y, (1 - t**2) * x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_expressions_with_dask_variables(dtype):
    X, Y = data((13, 6), dtype), data((13, 6), dtype)
    dX = da.from_array(X, chunks=((5, 5, 3), (4, 2)))
    dY = da.from_array(Y, chunks=((7, 6), (3, 3)))               # unlike X's
    (ev, edx, edy), (sv, sdx, sdy) = _expr_oracles(X, Y)
    v, j = ELEMENTWISE.value_and_jacobian("x", x=dX, y=dY)
    assert isinstance(v, da.Array) and isinstance(j, da.Array) and j.dtype == dtype
    close(v.compute(), ev, dtype)
    close(j.compute(), edx, dtype)
    np.testing.assert_array_equal(j.compute(), ELEMENTWISE.jacobian("x", x=X, y=Y))
    close(ELEMENTWISE.jacobian("y", x=dX, y=Y).compute(), edy, dtype)    # NumPy y
    close(ELEMENTWISE.value(x=dX, y=dY).compute(), ev, dtype)
    v, j = SUMMED.value_and_jacobian("x", x=dX, y=dY)
    assert v.shape == () and j.shape == X.shape
    close(v.compute(), sv, dtype)
    close(j.compute(), sdx, dtype)
    close(SUMMED.jacobian("y", x=dX, y=dY).compute(), sdy, dtype)
    close(SUMMED.value(x=dX, y=dY).compute(), sv, dtype)


def test_expressions_with_scalar_variables():
    X = data((10, 3))
    dX = da.from_array(X, chunks=(3, 2))
    z = 0.75
    _, (_, _, sdy) = _expr_oracles(X, z)
    # d/dz of a sum by a scalar z: a tree sum of the blocks' numbers
    j = SUMMED.jacobian("y", x=dX, y=z)
    assert j.shape == ()
    close(j.compute(), sdy.sum(), np.float64)
    # element-wise by a scalar: dy/dz shaped like y
    (_, _, edy), _ = _expr_oracles(X, z)
    close(ELEMENTWISE.jacobian("y", x=dX, y=np.float64(z)).compute(), edy, np.float64)
    # a 0-d Dask scalar variable
    close(SUMMED.jacobian("y", x=dX, y=da.from_array(np.array(z))).compute(), sdy.sum(),
          np.float64)


def test_expression_of_empty_arrays():
    X = da.zeros((0, 2), chunks=1)
    assert SUMMED.value(x=X, y=X).compute() == 0.0
    assert SUMMED.jacobian("x", x=X, y=X).compute().shape == (0, 2)


def test_expression_compiled_code_is_used_inside_tasks(monkeypatch):
    # at 2^16 elements per block the JIT compiles (once per process)
    n = 1 << 17
    X, Y = data(n), data(n)
    f = fastjac.compile(fastjac.maximum(x_ * y_ + 3, 0) * y_ - x_, wrt="x")
    got = f.jacobian("x", x=da.from_array(X, chunks=n // 2), y=da.from_array(Y, chunks=n // 4))
    np.testing.assert_array_equal(got.compute(), f.jacobian("x", x=X, y=Y))


# -- laziness ------------------------------------------------------------------------------

class _Counting:
    """Stands for fastjac._api in _dask, counting the kernel calls."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name in ("jacobian", "sum_gradient"):
            def counted(*args, **kwargs):
                self.calls += 1
                return attr(*args, **kwargs)
            return counted
        return attr


def test_nothing_is_computed_before_compute(monkeypatch):
    from dask.callbacks import Callback
    counting = _Counting(_dask._api)
    monkeypatch.setattr(_dask, "_api", counting)
    started = []
    X = da.from_array(data((8, 4)), chunks=(3, 2))
    w = da.from_array(data(4), chunks=2)
    with Callback(start=lambda dsk: started.append(1)):
        lazy = [fastjac.jacobian("multiply", w, X), fastjac.sum_gradient("multiply", w, X),
                fastjac.sum_gradient("multiply", X, 2.0, wrt=1),
                fastjac.sum_gradient("multiply", w, X, axis=1),
                *SUMMED.value_and_jacobian("x", x=X, y=X), ELEMENTWISE.value(x=X, y=X)]
    assert started == [] and counting.calls == 0        # no task ran, no kernel probed
    dask.compute(*lazy)
    assert counting.calls > 0


# -- errors -------------------------------------------------------------------------------------

def test_errors_are_raised_when_the_graph_is_built():
    X = da.ones((4, 3), chunks=2)
    with pytest.raises(ValueError, match="format='dense'.*format='compact'"):
        fastjac.jacobian("exp", X, format="dense")
    with pytest.raises(ValueError, match="format='csr'"):
        fastjac.sum_gradient("multiply", X, X, format="sparse")
    with pytest.raises(TypeError, match="out= is not supported with Dask arrays.*store"):
        fastjac.jacobian("exp", X, out=np.empty((4, 3)))
    with pytest.raises(TypeError, match="b has dtype complex128"):
        fastjac.jacobian("multiply", X, da.ones(3, dtype=complex, chunks=1))
    with pytest.raises(ValueError, match=r"a has shape \(4, 3\) and b has shape \(4,\)"):
        fastjac.jacobian("multiply", X, da.ones(4, chunks=2))
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else Exception):
        fastjac.sum_gradient("exp", X, axis=2)
    with pytest.raises(ValueError, match="unknown op"):
        fastjac.jacobian("nope", X)
    with pytest.raises(ValueError, match="wrt must be"):
        fastjac.jacobian("exp", X, wrt=1)
    with pytest.raises(ValueError, match="layout must be"):
        fastjac.jacobian("exp", X, layout="sideways")
    unknown = X[X[:, 0] > 0]                                     # nan chunk sizes
    with pytest.raises(ValueError, match="unknown chunk sizes.*compute_chunk_sizes"):
        fastjac.jacobian("exp", unknown)
    with pytest.raises(TypeError, match="a is a Dask array of .*numpy.ndarray blocks"):
        fastjac.jacobian("exp", X.map_blocks(np.ma.masked_invalid,
                                              meta=np.ma.masked_array(np.empty((0, 0)))))


def test_expression_errors():
    X = da.ones((4, 3), chunks=2)
    with pytest.raises(ValueError,
                       match=r"x has shape \(4, 3\) and y has shape \(2,\).*broadcast together"):
        SUMMED.jacobian("x", x=X, y=da.ones(2, chunks=1))
    with pytest.raises(ValueError, match="missing value for variable 'y'"):
        SUMMED.jacobian("x", x=X)
    with pytest.raises(ValueError, match="format='dense'"):
        SUMMED.jacobian("x", x=X, y=X, format="dense")
    with pytest.raises(TypeError, match="value_out= is not supported"):
        SUMMED.value_and_jacobian("x", x=X, y=X, value_out=np.empty(()))
    outer = fastjac.compile(x_ * fastjac.sum(y_))       # diagonal plus rank one
    with pytest.raises(NotImplementedError, match="diagonal plus rank one"):
        outer.jacobian("x", x=X, y=X)


# -- threads ---------------------------------------------------------------------------------

@_dask.task
def _serial_flag(block):
    previous = _pool._serial_in_this_thread(True)
    _pool._serial_in_this_thread(previous)
    return np.full(block.shape, previous)


def test_tasks_run_fastjac_on_their_own_thread(monkeypatch):
    X = da.ones(8, chunks=2)
    flags = X.map_blocks(_serial_flag, dtype=bool, meta=np.empty(0, bool))
    assert flags.compute(scheduler="threads").all()
    assert not _pool._serial_in_this_thread(False)         # the caller's thread is untouched
    monkeypatch.setenv("FASTJAC_DASK_POOL", "1")
    assert not flags.compute(scheduler="threads").any()


def test_serial_flag_is_per_thread():
    import threading
    assert not _pool._serial_in_this_thread(True)
    seen = []
    t = threading.Thread(target=lambda: seen.append(_pool._serial_in_this_thread(False)))
    t.start()
    t.join()
    assert seen == [False]
    assert _pool._serial_in_this_thread(False)


# -- pickling and import -------------------------------------------------------------------------

def test_compiled_expressions_pickle_and_rebuild():
    X, Y = data(20), data(20)
    for f in (ELEMENTWISE, SUMMED):
        g = pickle.loads(pickle.dumps(f))
        assert g is not f and g.variables == f.variables
        np.testing.assert_array_equal(g.jacobian("x", x=X, y=Y), f.jacobian("x", x=X, y=Y))
    # in a graph: one rebuilt object per process, shared by the tasks
    shared = _dask._share(SUMMED)
    again = pickle.loads(pickle.dumps(shared))
    assert again.compiled is SUMMED
    fresh = pickle.loads(pickle.dumps(shared).replace(shared.token.encode(), b"0" * 32))
    assert fresh.compiled is not SUMMED and fresh.compiled.variables == SUMMED.variables
    lazy = SUMMED.jacobian("x", x=da.from_array(X, chunks=7), y=Y)
    import cloudpickle
    np.testing.assert_array_equal(cloudpickle.loads(cloudpickle.dumps(lazy)).compute(),
                                  lazy.compute())


def test_import_fastjac_does_not_import_dask():
    code = ("import sys, numpy as np, fastjac; fastjac.jacobian('exp', np.ones(3)); "
            "fastjac.sum_gradient('multiply', np.ones(3), np.ones((2, 3))); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- dask.distributed ---------------------------------------------------------------------------

# (the ``client`` fixture, a LocalCluster of two processes: tests/conftest.py)

@pytest.mark.cluster
def test_cluster_results_equal_numpy(client):
    X, w = data((3000, 40)), data(40)
    dX = da.from_array(X, chunks=(700, 40))
    got = client.compute([fastjac.jacobian("divide", dX, w, wrt=1),
                          fastjac.sum_gradient("multiply", w, dX),
                          SUMMED.value_and_jacobian("y", x=dX, y=dX)[1]])
    j, g, e = client.gather(got)
    np.testing.assert_array_equal(j, fastjac.jacobian("divide", X, w, wrt=1))
    close(g, X.sum(0), np.float64)
    close(e, _expr_oracles(X, X)[1][2], np.float64)


@pytest.mark.cluster
def test_cluster_jit_compiles_once_per_worker(client):
    n = 1 << 16
    # made on the workers (no data in the graph): 0.5 + (i mod 997) / 997
    dX = 0.5 + (da.arange(16 * n, chunks=n) % 997) / 997
    X = 0.5 + (np.arange(16 * n) % 997) / 997
    f = fastjac.compile(fastjac.maximum(x_ * y_ + 5, 0) * x_ - y_ / 3, wrt="x")
    before = client.run(lambda: __import__("fastjac")._jit.status().get("compiled", 0))
    got = f.jacobian("x", x=dX, y=dX[::-1])
    np.testing.assert_array_equal(got.compute(), f.jacobian("x", x=X, y=X[::-1]))
    after = client.run(lambda: __import__("fastjac")._jit.status().get("compiled", 0))
    ran = client.run(lambda: len(__import__("fastjac")._dask._SHARED))
    for worker in after:
        # 16 tasks over 2 workers; each worker compiled the program at most once
        assert after[worker] - before[worker] <= 1
    assert sum(after[w] - before[w] for w in after) >= 1
    assert all(v >= 1 for v in ran.values())


def _slow_identity(block):
    time.sleep(0.15)
    return block


@pytest.mark.cluster
def test_cluster_killed_worker_does_not_change_the_result(client):
    pytest.importorskip("distributed")
    X, w = data((4000, 10)), data(10)
    dX = da.from_array(X, chunks=(250, 10)).map_blocks(_slow_identity, dtype=X.dtype,
                                                         meta=np.empty((0, 0)))
    lazy = [fastjac.sum_gradient("multiply", w, dX), fastjac.jacobian("tanh", dX)]
    futures = client.compute(lazy)
    deadline = time.time() + 20
    while time.time() < deadline:
        processing = client.processing()
        if any(processing.values()):
            break
        time.sleep(0.02)
    time.sleep(0.3)                      # some tasks done, others running
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    assert not all(f.done() for f in futures)
    os.kill(pids[victim], 9)
    g, j = client.gather(futures)
    assert pids[victim] not in client.run(os.getpid).values()     # it did die
    close(g, X.sum(0), np.float64)
    np.testing.assert_array_equal(j, fastjac.jacobian("tanh", X))
    # the nanny restarted the worker: two are back
    client.wait_for_workers(2, timeout=30)
    assert len(client.scheduler_info()["workers"]) == 2


@pytest.mark.cluster
def test_example_runs_in_ci_mode():
    pytest.importorskip("distributed")
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "dask_gradient.py")
    out = subprocess.run([sys.executable, example, "--small"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the gradient equals the closed form" in out.stdout
    assert "peak memory of worker" in out.stdout and "GB/s" in out.stdout


def test_expression_of_scalars_only_keeps_float32():
    z = da.from_array(np.array(0.5, np.float32))
    got = ELEMENTWISE.jacobian("y", x=np.float32(2.0), y=z)
    assert got.shape == () and got.dtype == np.float32
    x, y = np.float32(2.0), np.float32(0.5)
    want = x * (x * y + 3 > 0) + x / y**2
    assert got.compute().dtype == np.float32
    np.testing.assert_allclose(got.compute(), want, rtol=RTOL32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_hessian_with_dask_operands(dtype):
    """sum_hessian's diagonal blocks (tree sums over broadcast axes) and mixed
    block (element-wise), lazy, against closed forms."""
    X, w = data((11, 7), dtype), data(7, dtype)
    dX = da.from_array(X, chunks=((4, 4, 3), (3, 4)))
    X64, w64 = X.astype(np.float64), w.astype(np.float64)
    cases = [
        (("divide", w, dX), dict(wrt=1), 2 * w64 / X64**3),                  # d2/db2, shape X
        (("divide", dX, w), dict(wrt=1), (2 * X64 / w64**3).sum(0)),         # summed over rows
        (("multiply", w, dX), dict(wrt=(0, 1)), np.ones(X.shape)),          # mixed, over S
        (("divide", dX, 1.5), dict(wrt=1), (2 * X64 / 1.5**3).sum()),        # scalar operand
        (("exp", dX), {}, np.exp(X64)),
    ]
    for args, kwargs, want in cases:
        got = fastjac.sum_hessian(*args, **kwargs)
        assert isinstance(got, da.Array), (args[0], kwargs)
        value = got.compute()
        assert value.dtype == dtype and value.shape == np.shape(want), (args[0], kwargs)
        close(value, want, dtype)
    with pytest.raises(ValueError):
        fastjac.sum_hessian("exp", dX, format="dense")
