"""The API contract shared by every family: dtypes, out=, memory layouts, errors."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastjac

W = np.array([1.0, 2.0, 3.0])
X = np.array([4.0, 5.0, 6.0])


class TestDtypes:
    def test_float32_stays_float32_and_float64_stays_float64(self):
        for dtype in (np.float32, np.float64):
            w, x = W.astype(dtype), X.astype(dtype)
            assert fastjac.jacobian("divide", w, x, wrt=1).dtype == dtype
            assert fastjac.sum_gradient("multiply", w, x).dtype == dtype
            assert fastjac.jacobian("tanh", w, format="dense").dtype == dtype

    def test_float32_is_computed_in_float32(self):
        x = np.float32([1.1, 2.3, 3.7])
        expected = (np.float32(0.5) / np.sqrt(x)).astype(np.float32)
        np.testing.assert_allclose(fastjac.jacobian("sqrt", x), expected, rtol=2e-7)

    @pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
    def test_integers_and_bool_become_float64(self, dtype):
        w = np.array([1, 0, 1], dtype=dtype)
        result = fastjac.jacobian("multiply", w, w, wrt=1)
        assert result.dtype == np.float64
        np.testing.assert_array_equal(result, w.astype(np.float64))

    def test_mixed_floats_promote_like_numpy(self):
        result = fastjac.jacobian("multiply", W.astype(np.float32), X, wrt=0)
        assert result.dtype == np.float64
        assert fastjac.jacobian("multiply", W.astype(np.float16), W.astype(np.float32)).dtype \
            == np.float32

    def test_python_numbers_are_weak_numpy_scalars_strong(self):
        w32 = W.astype(np.float32)
        assert fastjac.jacobian("multiply", w32, 2.0).dtype == np.float32
        assert fastjac.jacobian("multiply", w32, 2).dtype == np.float32
        assert fastjac.jacobian("multiply", w32, np.float64(2.0)).dtype == np.float64
        assert isinstance(fastjac.jacobian("multiply", 2.0, 3.0), np.float64)

    def test_lists_and_tuples_are_accepted(self):
        np.testing.assert_array_equal(fastjac.jacobian("multiply", [1, 2], (3.0, 4.0)), [3, 4])

    @pytest.mark.parametrize("bad, name", [
        (np.array([1 + 2j]), "complex128"),
        (np.array([1.0], dtype=object), "object"),
        (np.array(["a"]), "<U1"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"),
        (np.array([1.0], dtype=np.longdouble), "float128"),
    ])
    def test_non_real_dtypes_raise_type_error_naming_the_dtype(self, bad, name):
        with pytest.raises(TypeError, match=re.escape(name)):
            fastjac.jacobian("multiply", bad, bad)
        with pytest.raises(TypeError, match="b has dtype"):
            fastjac.sum_gradient("multiply", np.ones(1), bad)

    @pytest.mark.parametrize("bad", [None, "abc", 1 + 2j])
    def test_non_arrays_raise_type_error(self, bad):
        with pytest.raises(TypeError, match="a "):
            fastjac.jacobian("exp", bad)


class TestOut:
    def test_out_is_written_and_returned(self):
        out = np.empty(3)
        assert fastjac.jacobian("multiply", W, X, out=out) is out
        np.testing.assert_array_equal(out, X)
        assert fastjac.sum_gradient("multiply", W, X, wrt=1, out=out) is out
        np.testing.assert_array_equal(out, W)

    def test_dense_out(self):
        out = np.full((3, 3), 7.0)
        assert fastjac.jacobian("multiply", W, X, format="dense", out=out) is out
        np.testing.assert_array_equal(out, np.diag(X))
        row = np.empty((1, 3))
        fastjac.sum_gradient("multiply", W, X, format="dense", out=row)
        np.testing.assert_array_equal(row, [X])

    def test_strided_out_gets_the_values(self):
        buf = np.zeros(6)
        fastjac.jacobian("multiply", W, X, out=buf[::2])
        np.testing.assert_array_equal(buf, [4, 0, 5, 0, 6, 0])

    def test_out_may_be_an_input(self):
        w, x = W.copy(), X.copy()
        fastjac.jacobian("divide", w, x, wrt=1, out=x)
        np.testing.assert_array_equal(x, -W / X**2)

    def test_out_partially_overlapping_an_input(self):
        buf = np.arange(1.0, 6.0)
        expected = 2 * buf[:4]
        fastjac.jacobian("square", buf[:4], out=buf[1:5])
        np.testing.assert_array_equal(buf[1:5], expected)

    @pytest.mark.parametrize("out, message", [
        (np.empty(3, np.float32), "out has dtype float32 but the result has dtype float64"),
        (np.empty(4), r"out has shape \(4,\) but the result has shape \(3,\)"),
        (np.empty((3, 1)), r"out has shape \(3, 1\)"),
    ])
    def test_out_mismatch(self, out, message):
        with pytest.raises(ValueError, match=message):
            fastjac.jacobian("multiply", W, X, out=out)

    def test_read_only_out(self):
        out = np.empty(3)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="out is read-only"):
            fastjac.jacobian("multiply", W, X, out=out)

    def test_out_must_be_an_ndarray(self):
        with pytest.raises(TypeError, match="out must be a numpy.ndarray, got list"):
            fastjac.jacobian("multiply", W, X, out=[0.0, 0.0, 0.0])

    def test_out_with_sparse_format(self):
        with pytest.raises(ValueError, match="out= is only supported with format"):
            fastjac.jacobian("multiply", W, X, format="csr", out=np.empty((3, 3)))

    def test_dense_out_mismatch(self):
        with pytest.raises(ValueError, match=r"dense result has shape \(3, 3\)"):
            fastjac.jacobian("multiply", W, X, format="dense", out=np.empty(3))

    def test_failed_call_leaves_out_untouched(self):
        out = np.full(3, 9.0)
        with pytest.raises(ValueError):
            fastjac.jacobian("multiply", W, np.ones(4), out=out)
        np.testing.assert_array_equal(out, 9.0)


# Piecewise-constant operators: their derivative is 0 wherever it exists.
STRUCTURALLY_ZERO_OPS = ("greater", "less")


def zero_cases(dtype):
    """(a, b, shape of the result) for arrays, 2-D arrays and scalar expansion."""
    a = np.linspace(-1, 1, 7, dtype=dtype)
    m = np.arange(12, dtype=dtype).reshape(3, 4)
    return [(a, a[::-1].copy(), (7,)), (m, m.T.copy().T, (3, 4)),
            (a, dtype(0.5), (7,)), (dtype(0.5), m, (3, 4))]


class TestStructurallyZero:
    """greater and less: results without a kernel run, still fresh arrays."""

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("op", STRUCTURALLY_ZERO_OPS)
    def test_allocated_result_is_a_fresh_array_of_zeros(self, op, dtype):
        for a, b, shape in zero_cases(dtype):
            for wrt in (0, 1):
                wrt_shape = np.shape(a if wrt == 0 else b)
                results = [(fastjac.jacobian(op, a, b, wrt=wrt), shape)]
                # a sum's gradient by an array operand is an array too
                if wrt_shape:
                    results.append((fastjac.sum_gradient(op, a, b, wrt=wrt), wrt_shape))
                for result, expected_shape in results:
                    assert type(result) is np.ndarray
                    assert result.shape == expected_shape
                    assert result.dtype == dtype
                    assert result.flags.c_contiguous and result.flags.writeable
                    assert result.flags.owndata
                    np.testing.assert_array_equal(result, 0)
                    assert not np.signbit(result).any()
                    for operand in (a, b):
                        assert not np.shares_memory(result, operand)
                assert not np.shares_memory(results[0][0], fastjac.jacobian(op, a, b, wrt=wrt))

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("op", STRUCTURALLY_ZERO_OPS)
    def test_scalar_results(self, op, dtype):
        result = fastjac.jacobian(op, dtype(1.0), dtype(2.0), wrt=1)
        assert type(result) is dtype and result == 0
        a = np.linspace(-1, 1, 7, dtype=dtype)
        total = fastjac.sum_gradient(op, a, 0.5, wrt=1)
        assert type(total) is dtype and total == 0

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("op", STRUCTURALLY_ZERO_OPS)
    def test_out_is_overwritten_with_zeros(self, op, dtype):
        for a, b, shape in zero_cases(dtype):
            for wrt in (0, 1):
                out = np.full(shape, np.nan, dtype)
                assert fastjac.jacobian(op, a, b, wrt=wrt, out=out) is out
                np.testing.assert_array_equal(out, 0)
                strided = np.full(shape + (2,), np.nan, dtype)[..., 0]
                assert fastjac.jacobian(op, a, b, wrt=wrt, out=strided) is strided
                np.testing.assert_array_equal(strided, 0)
        out = np.full((), np.nan, dtype)
        assert fastjac.sum_gradient(op, np.ones(5, dtype), 0.5, wrt=1, out=out) is out
        assert out == 0

    @pytest.mark.parametrize("op", STRUCTURALLY_ZERO_OPS)
    def test_dense_and_sparse_formats(self, op):
        pytest.importorskip("scipy")
        a, b = np.linspace(-1, 1, 5), np.linspace(1, -1, 5)
        for wrt in (0, 1):
            dense = fastjac.jacobian(op, a, b, wrt=wrt, format="dense")
            np.testing.assert_array_equal(dense, np.zeros((5, 5)))
            out = np.full((5, 5), np.nan)
            assert fastjac.jacobian(op, a, b, wrt=wrt, format="dense", out=out) is out
            np.testing.assert_array_equal(out, 0)
            for fmt in ("csr", "csc", "coo", "dia"):
                for matrix in (fastjac.jacobian(op, a, b, wrt=wrt, format=fmt),
                               fastjac.jacobian(op, a, 0.5, wrt=1, format=fmt),
                               fastjac.sum_gradient(op, a, b, wrt=wrt, format=fmt)):
                    assert matrix.nnz == 0, fmt
                    np.testing.assert_array_equal(matrix.toarray(), 0)
        np.testing.assert_array_equal(
            fastjac.jacobian(op, a, 0.5, wrt=1, format="dense"), np.zeros((5, 1)))

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
    def test_allocated_zeros_are_not_written(self):
        """The result is zeroed memory from the OS, not written by a kernel:
        its pages are not resident until touched (64 MB, above glibc's
        largest threshold for serving a calloc from the heap)."""
        def resident():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        x = np.zeros(1 << 23)           # itself untouched: the call reads no operand
        before = resident()
        result = fastjac.jacobian("greater", x, 0.5)
        grown = resident() - before
        assert result.nbytes == 64 << 20
        assert grown < 16 << 20, f"{grown} bytes became resident"


class TestMemoryLayouts:
    def test_strided_negative_and_fortran_inputs(self):
        base = np.arange(1.0, 25.0).reshape(4, 6)
        for view in (base[:, ::2], base[::-1], base.T, np.asfortranarray(base), base[::2, ::-3]):
            np.testing.assert_array_equal(fastjac.jacobian("square", view), 2 * view)
            np.testing.assert_array_equal(fastjac.jacobian("multiply", view, view.copy(), wrt=1),
                                          view)

    def test_byte_swapped_input(self):
        big = X.astype(">f8")
        np.testing.assert_array_equal(fastjac.jacobian("multiply", W, big), X)

    def test_inputs_are_never_modified_and_read_only_inputs_work(self):
        w, x = W.copy(), X.copy()
        w.flags.writeable = False
        x.flags.writeable = False
        for op in fastjac.BINARY_OPS:
            fastjac.jacobian(op, w, x, wrt=1)
            fastjac.sum_gradient(op, w, 2.0, wrt=1)
        np.testing.assert_array_equal(w, W)
        np.testing.assert_array_equal(x, X)

    def test_zero_size(self):
        e = np.empty((0, 3))
        assert fastjac.jacobian("exp", e).shape == (0, 3)
        assert fastjac.jacobian("exp", e, format="dense").shape == (0, 0)
        assert fastjac.sum_gradient(None, e, format="dense").shape == (3, 0)


class TestErrors:
    def test_unknown_op_lists_the_valid_names(self):
        with pytest.raises(ValueError, match="unknown op 'mul'.*multiply.*tanh"):
            fastjac.jacobian("mul", W, X)
        with pytest.raises(ValueError, match="unknown op"):
            fastjac.sum_gradient(["add"], W, X)
        with pytest.raises(ValueError, match="unknown op"):
            fastjac.jacobian(None, W)

    @pytest.mark.parametrize("wrt", [2, -1, "0", 0.0, True, None])
    def test_bad_wrt(self, wrt):
        with pytest.raises(ValueError, match="wrt must be 0 or 1"):
            fastjac.jacobian("add", W, X, wrt=wrt)

    def test_wrt_one_of_a_unary_function(self):
        with pytest.raises(ValueError, match="wrt must be 0"):
            fastjac.jacobian("exp", W, wrt=1)

    def test_bad_layout_and_format(self):
        with pytest.raises(ValueError, match="layout must be 'numerator' or 'denominator'"):
            fastjac.jacobian("add", W, X, layout="row")
        with pytest.raises(ValueError, match="format must be one of"):
            fastjac.sum_gradient("add", W, X, format="bsr")
        with pytest.raises(ValueError, match="format must be one of"):
            fastjac.jacobian("add", W, X, format=None)

    def test_mismatched_shapes_name_both(self):
        with pytest.raises(ValueError, match=r"a has shape \(3,\) and b has shape \(2, 2\)"):
            fastjac.jacobian("add", W, np.ones((2, 2)))
        with pytest.raises(ValueError, match=r"\(2,\).*must broadcast together"):
            fastjac.sum_gradient("add", W, np.ones(2))

    def test_arity(self):
        with pytest.raises(ValueError, match="binary operator: pass a second operand"):
            fastjac.jacobian("multiply", W)
        with pytest.raises(ValueError, match="unary function: b must be None"):
            fastjac.sum_gradient("tanh", W, X)

    def test_dense_too_large_for_memory_says_how_many_bytes(self):
        big = np.ones(1_000_000)
        with pytest.raises(MemoryError, match="8000000000000 bytes"):
            fastjac.jacobian("exp", big, format="dense")
        with pytest.raises(MemoryError, match="DIA storage"):
            fastjac.sum_gradient(None, np.ones(1_000_000), format="dia")


def test_import_does_not_import_scipy():
    code = ("import sys, fastjac; fastjac.jacobian('exp', [1.0]); "
            "f = fastjac.compile(fastjac.var('x') * 2); f.jacobian(x=[1.0]); "
            "print('scipy' in sys.modules, any(m.split('.')[0] in ('dask', 'distributed') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"      # neither SciPy nor Dask


def test_sparse_without_scipy_says_how_to_install_it():
    code = ("import sys; sys.modules['scipy'] = None; sys.modules['scipy.sparse'] = None\n"
            "import fastjac\n"
            "try:\n    fastjac.jacobian('exp', [1.0], format='csr')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'fastjac[sparse]'" in out.stdout


class TestKernel:
    def test_kernel_matches_the_formula(self):
        out = np.empty(3)
        assert fastjac.kernel("divide", wrt=1)(W, X, out) is out
        np.testing.assert_array_equal(out, -W / X**2)
        fastjac.kernel("tanh")(X.astype(np.float32), out32 := np.empty(3, np.float32))
        np.testing.assert_allclose(out32, 1 / np.cosh(X) ** 2, rtol=1e-5)
        fastjac.kernel("multiply", wrt=1)(np.array(2.0), X, out)   # 0-d = scalar operand
        np.testing.assert_array_equal(out, 2.0)

    def test_kernel_errors(self):
        k = fastjac.kernel("multiply")
        with pytest.raises(TypeError, match="takes 3 arrays"):
            k(W, X)
        with pytest.raises(TypeError, match="must all be numpy.ndarray"):
            k([1.0, 2.0, 3.0], X, np.empty(3))
        with pytest.raises(TypeError, match="one dtype"):
            k(W, X, np.empty(3, np.float32))
        with pytest.raises(ValueError, match="C-contiguous"):
            k(W, X, np.empty(6)[::2])
        with pytest.raises(ValueError, match="shapes do not match"):
            k(W, np.ones(4), np.empty(3))
        with pytest.raises(ValueError, match="partially overlaps"):
            buf = np.ones(4)
            k(buf[:3], X, buf[1:])
        with pytest.raises(ValueError, match="unknown op"):
            fastjac.kernel("nope")
        with pytest.raises(ValueError, match="wrt must be"):
            fastjac.kernel("exp", wrt=1)
