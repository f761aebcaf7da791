"""Compiled code is reused: in a process for equal programs, and across
processes through the opt-in disk cache ($FASTJAC_JIT_CACHE) (_jit.py).

Oracles: closed forms in NumPy, and the interpreter's bits (compiled code
must equal them exactly); compilations counted by ``_jit.status()`` and by
the chunk libraries mapped in /proc/self/maps.
"""
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastjac as fj
from fastjac import _expr, _jit

N = 70_001                      # above _jit.JIT_MIN_SIZE

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"),
                                reason="counts mappings in /proc/self/maps")


@pytest.fixture
def jit_mode():
    yield _expr._set_jit
    _expr._set_jit(None)


def data(dtype=np.float64, n=N):
    rng = np.random.default_rng(1)
    return rng.uniform(0.25, 2.0, n).astype(dtype), rng.uniform(0.25, 2.0, n).astype(dtype)


def chunk_mappings():
    with open("/proc/self/maps") as f:
        return sum("/chunk" in line and ".so" in line for line in f)


def value_and_derivative(expr, w, x):
    value, deriv = np.empty_like(w), np.empty_like(w)
    fj.compile(expr).kernel("w", value=True)(w, x, value, deriv)
    return value, deriv


def interpreted(expr, w, x, jit_mode):
    jit_mode("never")
    try:
        return value_and_derivative(expr, w, x)
    finally:
        jit_mode("always")


# -- in one process ----------------------------------------------------------------

def built_in_a_function():
    """A new Expr object each call, built the same way (this expression is
    used by no other test, so its first compilation happens here)."""
    w, x = fj.var("w"), fj.var("x")
    return fj.maximum(w * x - 0.75, 0) * x + w / (x + 2)


def closed_form(w, x):
    value = np.maximum(w * x - 0.75, 0) * x + w / (x + 2)
    deriv = np.where(w * x - 0.75 > 0, x * x, 0) + 1 / (x + 2)
    return value, deriv


@needs_proc
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equal_expressions_compile_once(dtype, jit_mode):
    jit_mode("always")
    w, x = data(dtype)
    expr = built_in_a_function()
    before, maps_before = _jit.status(), chunk_mappings()
    first = value_and_derivative(expr, w, x)
    after_first, maps_first = _jit.status(), chunk_mappings()
    assert after_first["compiled"] == before["compiled"] + 1
    assert maps_first > maps_before
    # the same Expr compiled again, and an equal one built anew: no compiler,
    # no new library
    again = value_and_derivative(expr, w, x)
    rebuilt = [value_and_derivative(built_in_a_function(), w, x) for _ in range(3)]
    status = _jit.status()
    assert status["compiled"] == after_first["compiled"]
    assert status["reused"] == after_first["reused"] + 4
    assert chunk_mappings() == maps_first
    for got in [again] + rebuilt:
        np.testing.assert_array_equal(got[0], first[0])
        np.testing.assert_array_equal(got[1], first[1])
    value_i, deriv_i = interpreted(expr, w, x, jit_mode)
    np.testing.assert_array_equal(first[0], value_i)
    np.testing.assert_array_equal(first[1], deriv_i)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for got, expect in zip(first, closed_form(w64, x64)):
        np.testing.assert_allclose(got, expect, rtol=tol, atol=tol)


def test_threads_asking_for_the_same_code_compile_once(jit_mode):
    jit_mode("always")
    w, x = data()
    n_threads = 6
    exprs = [fj.sqrt(w_ * 3.5) * fj.minimum(w_, x_) for w_, x_ in
             ((fj.var("w"), fj.var("x")) for _ in range(n_threads))]   # equal, not shared
    before = _jit.status()
    results, errors = [None] * n_threads, []
    barrier = threading.Barrier(n_threads)

    def work(i):
        try:
            barrier.wait()
            results[i] = value_and_derivative(exprs[i], w, x)
        except Exception as exc:          # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    status = _jit.status()
    assert status["error"] is None
    assert status["compiled"] == before["compiled"] + 1
    assert status["reused"] == before["reused"] + n_threads - 1
    expect_value = np.sqrt(3.5 * w) * np.minimum(w, x)
    expect_deriv = (0.5 * np.sqrt(3.5) / np.sqrt(w) * np.minimum(w, x)
                    + np.sqrt(3.5 * w) * np.where(w < x, 1, np.where(w == x, 0.5, 0)))
    value_i, deriv_i = interpreted(exprs[0], w, x, jit_mode)
    for value, deriv in results:
        np.testing.assert_allclose(value, expect_value, rtol=1e-13)
        np.testing.assert_allclose(deriv, expect_deriv, rtol=1e-13)
        np.testing.assert_array_equal(value, value_i)
        np.testing.assert_array_equal(deriv, deriv_i)


# -- the disk cache: where it is ------------------------------------------------------

@pytest.mark.parametrize("setting, xdg, expect", [
    (None, "/x", None), ("0", "/x", None), ("off", "/x", None),
    ("1", "/xdg", "/xdg/fastjac"), ("yes", "/xdg", "/xdg/fastjac"),
    ("1", "", "HOME/.cache/fastjac"), ("1", "relative", "HOME/.cache/fastjac"),
    ("/some/dir", "/x", "/some/dir"),
])
def test_cache_dir_from_the_environment(setting, xdg, expect, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    if setting is None:
        monkeypatch.delenv("FASTJAC_JIT_CACHE", raising=False)
    else:
        monkeypatch.setenv("FASTJAC_JIT_CACHE", setting)
    if expect is not None:
        expect = expect.replace("HOME", str(tmp_path))
    assert _jit.cache_dir() == expect


# -- the disk cache: across processes -------------------------------------------------

CHILD = """
    import json, sys
    import numpy as np, fastjac as fj
    from fastjac import _jit
    n = 70_001
    rng = np.random.default_rng(1)
    w, x = rng.uniform(0.25, 2.0, n), rng.uniform(0.25, 2.0, n)
    W, X = fj.var("w"), fj.var("x")
    value, deriv = np.empty_like(w), np.empty_like(w)
    fj.compile(fj.maximum(W * X - 0.5, 0) / (X + 1) - W).kernel("w", value=True)(
        w, x, value, deriv)
    np.savez(sys.argv[1], value=value, deriv=deriv)
    print(json.dumps(_jit.status()))
"""


def child(tmp_path, cache, name="result"):
    """Run CHILD with FASTJAC_JIT=1 and the given cache; its status and results."""
    env = {**os.environ, "FASTJAC_JIT": "1", "FASTJAC_JIT_CACHE": str(cache),
           "PYTHONWARNINGS": "default"}
    out = tmp_path / f"{name}.npz"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(out) as results:
        return json.loads(done.stdout), (results["value"], results["deriv"]), done.stderr


def check_child_results(results, jit_mode):
    """Bit for bit the interpreter's, and the closed form."""
    rng = np.random.default_rng(1)
    w, x = rng.uniform(0.25, 2.0, N), rng.uniform(0.25, 2.0, N)
    W, X = fj.var("w"), fj.var("x")
    value_i, deriv_i = interpreted(fj.maximum(W * X - 0.5, 0) / (X + 1) - W, w, x, jit_mode)
    np.testing.assert_array_equal(results[0], value_i)
    np.testing.assert_array_equal(results[1], deriv_i)
    np.testing.assert_allclose(results[0], np.maximum(w * x - 0.5, 0) / (x + 1) - w,
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(results[1], np.where(w * x > 0.5, x / (x + 1), 0) - 1,
                               rtol=1e-13, atol=1e-15)


def cached_files(cache):
    return sorted(p for p in cache.iterdir() if p.name.endswith(".so"))


def test_disk_cache_across_processes(tmp_path, jit_mode):
    cache = tmp_path / "nested" / "cache"           # created, parents too
    status, first, _ = child(tmp_path, cache, "first")
    assert (status["compiled"], status["loaded"], status["cache_error"]) == (1, 0, None)
    assert status["cache_dir"] == str(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (lib,) = cached_files(cache)
    assert stat.S_IMODE(lib.stat().st_mode) == 0o600
    assert lib.name.startswith("chunk-") and len(lib.name) == len("chunk-.so") + 64
    assert [p.name for p in cache.iterdir()] == [lib.name]       # no temporary left
    status, second, _ = child(tmp_path, cache, "second")
    assert (status["compiled"], status["loaded"], status["cache_error"]) == (0, 1, None)
    for results in (first, second):
        check_child_results(results, jit_mode)


def private_cache(tmp_path, name="cache"):
    """A cache directory holding the child's library, compiled by a child."""
    cache = tmp_path / name
    status, _, _ = child(tmp_path, cache, f"fill-{name}")
    assert status["compiled"] == 1
    return cache, cached_files(cache)[0]


def refused(tmp_path, cache, jit_mode, reason):
    """A child with this cache compiles (loads nothing), warns why, and computes
    the right numbers."""
    status, results, stderr = child(tmp_path, cache, "refused")
    assert (status["compiled"], status["loaded"]) == (1, 0)
    assert reason in status["cache_error"]
    assert "RuntimeWarning" in stderr and reason in stderr
    check_child_results(results, jit_mode)


def test_disk_cache_refuses_a_file_writable_by_others(tmp_path, jit_mode):
    cache, lib = private_cache(tmp_path)
    lib.chmod(0o666)
    refused(tmp_path, cache, jit_mode, "writable by group or others")
    assert stat.S_IMODE(lib.stat().st_mode) == 0o666     # ignored, not rewritten


def test_disk_cache_refuses_a_directory_writable_by_others(tmp_path, jit_mode):
    cache, lib = private_cache(tmp_path)
    cache.chmod(0o777)
    refused(tmp_path, cache, jit_mode, "writable by group or others")
    assert cached_files(cache) == [lib]                    # nothing written there


def test_disk_cache_refuses_symbolic_links(tmp_path, jit_mode):
    real, lib = private_cache(tmp_path, "real")
    linked = tmp_path / "linked"                           # a private directory ...
    linked.mkdir(mode=0o700)
    (linked / lib.name).symlink_to(lib)                    # ... with a linked file
    refused(tmp_path, linked, jit_mode, "symbolic link")
    assert (linked / lib.name).is_symlink()
    link_to_dir = tmp_path / "link-to-dir"                 # a linked directory
    link_to_dir.symlink_to(real, target_is_directory=True)
    refused(tmp_path, link_to_dir, jit_mode, "symbolic link")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_disk_cache_refuses_another_users_file(tmp_path, jit_mode):
    cache, lib = private_cache(tmp_path)
    os.chown(lib, 12345, -1)
    refused(tmp_path, cache, jit_mode, "belongs to uid 12345")


def test_disk_cache_recompiles_over_a_damaged_file(tmp_path, jit_mode):
    cache, lib = private_cache(tmp_path)
    lib.write_bytes(b"not a shared library")
    refused(tmp_path, cache, jit_mode, "does not load")
    assert lib.read_bytes()[:4] == b"\x7fELF"              # replaced by a good one
    assert stat.S_IMODE(lib.stat().st_mode) == 0o600


CHILD_INTERPRETED = """
    import json, sys, numpy as np, fastjac as fj
    from fastjac import _jit
    rng = np.random.default_rng(1)
    w, x = rng.uniform(-3.0, 3.0, 70001), rng.uniform(0.25, 2.0, 70001)
    W, X = fj.var("w"), fj.var("x")
    value, deriv = np.empty_like(w), np.empty_like(w)
    fj.compile(fj.softplus(W) * X + fj.sin(W * X)).kernel("w", value=True)(w, x, value, deriv)
    np.savez(sys.argv[1], value=value, deriv=deriv)
    print(json.dumps(_jit.status()))
"""


def test_cached_code_that_calls_the_interpreter_is_linked_to_it_on_load(tmp_path, jit_mode):
    """softplus and sin run in the interpreter's block code, whose address a
    library gets when it is loaded: from the compiler, and from the disk
    cache in a new process alike."""
    env = {**os.environ, "FASTJAC_JIT": "1", "FASTJAC_JIT_CACHE": str(tmp_path / "cache")}
    runs = []
    for name in ("first", "second"):
        out = tmp_path / f"{name}.npz"
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD_INTERPRETED),
                               str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with np.load(out) as results:
            runs.append((json.loads(done.stdout), results["value"], results["deriv"]))
    assert (runs[0][0]["compiled"], runs[0][0]["loaded"]) == (1, 0)
    assert (runs[1][0]["compiled"], runs[1][0]["loaded"]) == (0, 1)
    rng = np.random.default_rng(1)
    w, x = rng.uniform(-3.0, 3.0, N), rng.uniform(0.25, 2.0, N)
    W, X = fj.var("w"), fj.var("x")
    value_i, deriv_i = interpreted(fj.softplus(W) * X + fj.sin(W * X), w, x, jit_mode)
    for _, value, deriv in runs:
        np.testing.assert_array_equal(value, value_i)
        np.testing.assert_array_equal(deriv, deriv_i)
    np.testing.assert_allclose(value_i, np.logaddexp(0, w) * x + np.sin(w * x), rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_allclose(deriv_i, x / (1 + np.exp(-w)) + np.cos(w * x) * x,
                               rtol=1e-13, atol=1e-14)
