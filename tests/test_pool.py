"""The kernels' thread pool (src/fastjac/_pool.h): thread count, results that
do not depend on it, fork, and concurrent use.

The numbers are checked against NumPy formulas written here; the thread-count
property is checked bit for bit.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastjac

LARGE = 300_007          # above every thread threshold, not a multiple of a chunk


@pytest.fixture
def restore_threads():
    before = fastjac.get_num_threads()
    yield
    fastjac.set_num_threads(before)


def linux_threads():
    return len(os.listdir("/proc/self/task"))


# -- set_num_threads / get_num_threads ------------------------------------------------

def test_set_num_threads_returns_previous_and_takes_effect(restore_threads):
    fastjac.set_num_threads(3)
    assert fastjac.set_num_threads(1) == 3
    assert fastjac.get_num_threads() == 1
    assert fastjac.set_num_threads(np.int64(2)) == 1      # any integer type
    assert fastjac.get_num_threads() == 2


@pytest.mark.parametrize("bad", [1.0, "2", None, True, [2]])
def test_set_num_threads_rejects_non_integers(bad, restore_threads):
    before = fastjac.get_num_threads()
    with pytest.raises(TypeError, match="threads must be an integer"):
        fastjac.set_num_threads(bad)
    assert fastjac.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, fastjac.MAX_THREADS + 1, 10**20])
def test_set_num_threads_rejects_out_of_range(bad, restore_threads):
    before = fastjac.get_num_threads()
    with pytest.raises(ValueError, match=f"between 1 and {fastjac.MAX_THREADS}"):
        fastjac.set_num_threads(bad)
    assert fastjac.get_num_threads() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_fewer_threads_joins_the_helpers(restore_threads):
    x = np.linspace(0.1, 2.0, LARGE)
    fastjac.set_num_threads(4)
    fastjac.jacobian("tanh", x)                  # starts three helpers
    with_helpers = linux_threads()
    fastjac.set_num_threads(1)
    assert linux_threads() == with_helpers - 3
    fastjac.jacobian("tanh", x)                  # one thread: no helper started
    assert linux_threads() == with_helpers - 3


@pytest.mark.parametrize("env, expected", [
    ({"FASTJAC_NUM_THREADS": "3"}, "3"),
    ({"FASTJAC_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, "3"),
    ({"OMP_NUM_THREADS": "5,2"}, "5"),               # OpenMP's nested list: the first
    ({"FASTJAC_NUM_THREADS": "1000"}, str(fastjac.MAX_THREADS)),
    ({"FASTJAC_NUM_THREADS": "many"}, "cpus"),       # unusable: ignored
    ({"FASTJAC_NUM_THREADS": "0"}, "cpus"),
])
def test_thread_count_from_the_environment(env, expected):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("FASTJAC_NUM_THREADS", "OMP_NUM_THREADS")}
    code = "import fastjac; print(fastjac.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.strip()
    if expected == "cpus":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        expected = str(min(cpus, fastjac.MAX_THREADS))
    assert out == expected


# -- results: right, and the same on any number of threads ---------------------------

def _calls(x, y):
    """Large calls through every threaded loop: core, sums, expressions, neuron."""
    w, v = fastjac.var("w"), fastjac.var("v")
    f = fastjac.compile(fastjac.sum(fastjac.tanh(w * v) + 3), wrt="w")
    g = fastjac.compile(fastjac.sin(w) * fastjac.exp(v), wrt="w")
    X = np.stack([x[:60_000], y[:60_000]], axis=1)
    return {
        "tanh": fastjac.jacobian("tanh", x),
        "multiply": fastjac.jacobian("multiply", x, y, wrt=1),
        "sum_x_times_z": fastjac.sum_gradient("multiply", x, 2.5, wrt=1),
        "sum_sin": fastjac.sum_gradient("sin", x, wrt=0),
        # a**b's derivatives use threads from about a thousand elements
        "power_small": fastjac.jacobian("power", x[:1500], y[:1500], wrt=0),
        "sum_power_small": fastjac.sum_gradient("power", x[:1500], 2.5, wrt=1),
        "expr_sum": f.value_and_jacobian(w=x, v=y),
        "expr": g.jacobian(w=x, v=y),
        "neuron": fastjac.neuron_gradient(X, y[:60_000], np.array([0.3, -0.2]), 0.1,
                                          return_loss=True),
    }


def _oracle(x, y):
    t = np.tanh(x * y)
    X = np.stack([x[:60_000], y[:60_000]], axis=1)
    z = X @ np.array([0.3, -0.2]) + 0.1
    r = np.where(z > 0, z - y[:60_000], 0.0)
    return {
        "tanh": 1 - np.tanh(x) ** 2,
        "multiply": x,
        "sum_x_times_z": x.sum(),
        "sum_sin": np.cos(x),
        "power_small": y[:1500] * x[:1500] ** (y[:1500] - 1),
        "sum_power_small": np.sum(x[:1500] ** 2.5 * np.log(x[:1500])),
        "expr_sum": (np.sum(t + 3), (1 - t * t) * y),
        "expr": np.cos(x) * np.exp(y),
        "neuron": (2 / 60_000 * (r @ X), 2 / 60_000 * r.sum(),
                   np.mean((y[:60_000] - np.maximum(z, 0)) ** 2)),
    }


def _flat(value):
    if isinstance(value, tuple):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_results_are_right_and_equal_bit_for_bit_on_1_2_3_threads(dtype, restore_threads):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 1.5, LARGE).astype(dtype)
    y = rng.uniform(-1.0, 1.0, LARGE).astype(dtype)
    oracle = _oracle(x.astype(np.float64), y.astype(np.float64))
    results = {}
    for threads in (1, 2, 3):
        fastjac.set_num_threads(threads)
        results[threads] = _calls(x, y)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    for name, expected in oracle.items():
        for got, want in zip(_flat(results[1][name]), _flat(expected)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=name)
        for threads in (2, 3):
            for a, b in zip(_flat(results[1][name]), _flat(results[threads][name])):
                assert a.dtype == b.dtype and np.array_equal(a, b), \
                    f"{name}: {threads} threads differ from 1"


@pytest.mark.parametrize("op, wrt, scalar", [("power", 0, False), ("power", 1, True),
                                              ("exp", 0, False), ("sin", 0, False)])
def test_small_jobs_in_a_hot_loop_equal_one_thread(op, wrt, scalar, restore_threads):
    """Compute-bound kernels of 10^3 elements are split in two when the helper
    is awake (back-to-back calls wake it): every call, split or not, gives the
    one-thread result bit for bit, and the right one."""
    rng = np.random.default_rng(11)
    a = rng.uniform(0.3, 2.0, 1500)
    b = 1.7 if scalar else rng.uniform(-2.0, 2.0, 1500)
    operands = (a, b) if op == "power" else (a,)

    def calls():
        return [fastjac.jacobian(op, *operands, wrt=wrt) for _ in range(50)] + \
            [fastjac.sum_gradient(op, *operands, wrt=wrt) for _ in range(50)]
    fastjac.set_num_threads(1)
    serial = calls()
    fastjac.set_num_threads(2)
    threaded = calls()
    for i, got in enumerate(threaded):
        want = serial[0 if i < 50 else 50]
        assert np.asarray(got).dtype == np.asarray(want).dtype and np.array_equal(got, want), i
    d = {"power": (b * a ** (b - 1), a ** b * np.log(a)), "exp": (np.exp(a),),
         "sin": (np.cos(a),)}[op][wrt]
    np.testing.assert_allclose(serial[0], d, rtol=1e-13)
    np.testing.assert_allclose(serial[50], np.sum(d) if scalar else d, rtol=1e-12)


# -- fork and concurrency ------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_computes_with_threads():
    code = textwrap.dedent(f"""
        import os, sys, numpy as np, fastjac
        fastjac.set_num_threads(2)
        x = np.linspace(0.1, 2.0, {LARGE})
        fastjac.jacobian("tanh", x)            # the parent's helpers exist now
        pid = os.fork()
        if pid == 0:
            ok = np.allclose(fastjac.jacobian("tanh", x), 1 - np.tanh(x) ** 2) and \\
                np.isclose(fastjac.sum_gradient("multiply", x, 2.0, wrt=1), x.sum())
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_calls_from_threads_while_the_count_changes(restore_threads):
    x = np.linspace(0.1, 2.0, LARGE)
    expected_tanh = 1 - np.tanh(x) ** 2
    expected_sum = x.sum()
    errors = []

    def compute():
        try:
            for _ in range(30):
                np.testing.assert_allclose(fastjac.jacobian("tanh", x), expected_tanh,
                                           rtol=1e-12)
                np.testing.assert_allclose(
                    fastjac.sum_gradient("multiply", x, 2.0, wrt=1), expected_sum, rtol=1e-12)
        except Exception as exc:       # reported in the main thread
            errors.append(exc)

    def resize():
        for i in range(60):
            fastjac.set_num_threads(1 + i % 4)

    workers = [threading.Thread(target=compute) for _ in range(3)]
    workers.append(threading.Thread(target=resize))
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in workers), "a call hung"
    assert not errors, errors[0]


# -- the pool alone, under ThreadSanitizer ------------------------------------------

def test_pool_has_no_data_race_under_threadsanitizer(tmp_path):
    import shutil
    import sysconfig
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or sys.platform != "linux":
        pytest.skip("needs a C compiler on Linux")
    here = os.path.dirname(__file__)
    exe = tmp_path / "pool_stress"
    cmd = [cc, "-O1", "-g", "-fsanitize=thread", "-pthread",
           "-I", os.path.join(here, "..", "src", "fastjac"),
           "-I", sysconfig.get_paths()["include"],
           os.path.join(here, "c", "pool_stress.c"), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build with -fsanitize=thread: {built.stderr[-300:]}")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"})
    if "FATAL: ThreadSanitizer" in run.stderr and "unexpected memory mapping" in run.stderr:
        pytest.skip("ThreadSanitizer cannot run here (memory layout)")
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert run.stdout.strip() == "wrong elements: 0 0"
