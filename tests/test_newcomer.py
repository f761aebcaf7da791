"""What a new user trips on (issue 19): each test fails without its fix.

Oracles are closed forms and NumPy, written here.
"""
import builtins
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import fastjac
import fastjac as fj
from fastjac.expr_factors import Factor

RNG = np.random.default_rng(19)


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


# -- `from fastjac import *` leaves Python's builtins alone -------------------------------

@pytest.mark.parametrize("module", ["fastjac", "fastjac.expr"])
def test_star_import_keeps_builtins(module):
    namespace = {}
    exec(f"from {module} import *", namespace)
    shadowing = sorted(name for name in namespace
                       if name != "__builtins__" and hasattr(builtins, name))
    assert shadowing == []
    assert eval("sum([1, 2, 3])", namespace) == 6
    assert eval("abs(-3)", namespace) == 3
    code = eval('compile("1+1", "<s>", "eval")', namespace)
    assert eval(code) == 2
    assert "var" in namespace and "tanh" in namespace      # the rest is still exported


def test_shadowing_names_stay_reachable_as_attributes():
    x = fj.var("x")
    xv = np.array([-2.0, 0.5, 3.0])
    f = fj.compile(fj.sum(fj.abs(x) * 3))
    np.testing.assert_array_equal(f.jacobian(x=xv), 3 * np.sign(xv))
    assert fastjac.compile is fastjac.expr.compile


def test_builtin_abs_of_an_expression():
    x = fj.var("x")
    xv = np.array([-2.0, -0.5, 0.25, 3.0])
    f = fj.compile(abs(x) * x)                       # d(|x| x)/dx = 2|x|
    np.testing.assert_allclose(f.value(x=xv), np.abs(xv) * xv, rtol=1e-15)
    np.testing.assert_allclose(f.jacobian(x=xv), 2 * np.abs(xv), rtol=1e-15)


@pytest.mark.parametrize("module", [fastjac, fastjac.expr])
def test_missing_function_names_the_available_ones(module):
    with pytest.raises(AttributeError, match=r"has no attribute 'erf'; the functions of "
                                              r"fastjac expressions are.*tanh.*maximum.*dot"):
        module.erf
    assert not hasattr(module, "erf")
    with pytest.raises(AttributeError, match=r"has no attribute '__wrapped__'$"):
        module.__wrapped__


# -- ExprKernel: argument order, keyword calls ------------------------------------------

def softplus_loss():
    y, z = fj.var("y"), fj.var("z")
    return fj.sum(fj.log(1 + fj.exp(-y * z)))


def softplus_gradients(yv, zv):
    """d/dy and d/dz of sum(log(1 + exp(-y z)))."""
    s = sigmoid(-yv * zv)
    return -zv * s, -yv * s


def test_default_order_is_first_appearance():
    f = fj.compile(softplus_loss())
    assert f.variables == ("y", "z")
    k = f.kernel("y")
    assert k.arguments == ("y", "z", "out")
    assert repr(k) == "<fastjac expression kernel d/dy: k(y, z, out)>"
    assert "call as k(y, z, out) or k(y=..., z=..., out=...)" in k.__doc__
    assert str(inspect.signature(k)) == "(y, z, out)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keyword_call_is_independent_of_the_order(dtype):
    yv = RNG.standard_normal(16).astype(dtype)
    zv = RNG.standard_normal(16).astype(dtype)
    dy, dz = softplus_gradients(yv.astype(float), zv.astype(float))
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    f = fj.compile(softplus_loss())
    for wrt, expected in (("y", dy), ("z", dz)):
        k = f.kernel(wrt)
        out = np.empty(16, dtype)
        assert k(z=zv, y=yv, out=out) is out
        np.testing.assert_allclose(out, expected, rtol=rtol)
        out[...] = np.nan
        k(yv, out=out, z=zv)                                     # mixed
        np.testing.assert_allclose(out, expected, rtol=rtol)
        out[...] = np.nan
        type(k).__call__(k, out=out, z=zv, y=yv)                 # the tp_call slot
        np.testing.assert_allclose(out, expected, rtol=rtol)
        out[...] = np.nan
        k(**{"out": out, "y": yv, "z": zv})
        np.testing.assert_allclose(out, expected, rtol=rtol)
    kv = f.kernel("z", value=True)
    assert kv.arguments == ("y", "z", "value_out", "out")
    value, out = np.empty((), dtype), np.empty(16, dtype)
    kv(out=out, value_out=value, z=zv, y=yv)
    loss = np.sum(np.log1p(np.exp(-yv.astype(float) * zv.astype(float))))
    np.testing.assert_allclose(value, loss, rtol=rtol)
    np.testing.assert_allclose(out, dz, rtol=rtol)


def test_explicit_variable_order():
    yv, zv = RNG.standard_normal(8), RNG.standard_normal(8)
    dy, dz = softplus_gradients(yv, zv)
    f = fj.compile(softplus_loss(), variables=("z", "y"))
    assert f.variables == ("z", "y")
    assert f.wrt == ("z", "y")
    k = f.kernel("y")
    assert repr(k) == "<fastjac expression kernel d/dy: k(z, y, out)>"
    np.testing.assert_allclose(k(zv, yv, np.empty(8)), dy, rtol=1e-13)
    np.testing.assert_allclose(f.kernel("z")(zv, yv, np.empty(8)), dz, rtol=1e-13)
    np.testing.assert_allclose(f.jacobian(["z", "y"], y=yv, z=zv), np.r_[dz, dy][None],
                               rtol=1e-13)


@pytest.mark.parametrize("order, message", [
    ("zy", "list or tuple of variable names"),
    (None.__class__, "list or tuple of variable names"),
    (("z",), "missing: y"),
    (("z", "y", "y"), "names 'y' twice"),
    (("z", "q"), "'q', which is not a variable of the expression; its variables are: y, z"),
    (("z", "y", 3), "names 3, which is not a variable"),
])
def test_explicit_variable_order_is_checked(order, message):
    with pytest.raises(ValueError, match=message):
        fj.compile(softplus_loss(), variables=order)


def test_keyword_call_errors():
    k = fj.compile(softplus_loss()).kernel("y")
    a, out = np.ones(4), np.empty(4)
    with pytest.raises(TypeError, match="missing the argument 'out'; call as k"):
        k(y=a, z=a)
    with pytest.raises(TypeError, match="unexpected keyword argument 'q'"):
        k(y=a, out=out, q=a)
    with pytest.raises(TypeError, match="missing the argument 'z'"):
        k(a, out=out)
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'; its arguments are "
                                        "y, z, out"):
        k(y=a, w=a, out=out)
    with pytest.raises(TypeError, match="multiple values for argument 'y'"):
        k(a, a, y=a)
    with pytest.raises(TypeError, match="takes 3 arrays"):
        k(a, a, out, a, out=out)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        k(y=[1.0] * 4, z=a, out=out)
    with pytest.raises(ValueError, match="overlaps"):
        k(y=a, z=a, out=a)
    assert not np.isnan(a).any() and (a == 1).all()


def test_kernel_pickles():
    import pickle
    yv, zv = RNG.standard_normal(8), RNG.standard_normal(8)
    dy, _ = softplus_gradients(yv, zv)
    k = fj.compile(softplus_loss(), variables=("z", "y")).kernel("y", value=True)
    k(z=zv, y=yv, value_out=np.empty(()), out=np.empty(8))
    again = pickle.loads(pickle.dumps(k))
    assert repr(again) == repr(k) == "<fastjac expression kernel d/dy: k(z, y, value_out, out)>"
    np.testing.assert_allclose(again(z=zv, y=yv, value_out=np.empty(()), out=np.empty(8)), dy,
                               rtol=1e-13)
    # a compiled expression holds the kernels of its fast path: they come along
    f = fj.compile(softplus_loss())
    np.testing.assert_allclose(f.jacobian("y", y=yv, z=zv), dy, rtol=1e-13)
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_allclose(g.jacobian("y", y=yv, z=zv), dy, rtol=1e-13)
    np.testing.assert_allclose(g.kernel("y")(z=zv, y=yv, out=np.empty(8)), dy, rtol=1e-13)


# -- Factor.toarray(layout) validates layout as fastjac.jacobian does ----------------------

def rank_one_factor():
    """d/dw of tanh(w . x / 10) * x + sin(w) and its dense closed form."""
    w, x = fj.var("w"), fj.var("x")
    f = fj.compile(fj.tanh(fj.dot(w, x) / 10) * x + fj.sin(w))
    wv, xv = RNG.standard_normal(5), RNG.standard_normal(5)
    s = wv @ xv
    dense = np.diag(np.cos(wv)) + np.outer(xv, (1 - np.tanh(s / 10) ** 2) * xv / 10)
    factor = f.jacobian("w", w=wv, x=xv)
    assert isinstance(factor, Factor) and factor.kind == "general"
    return factor, dense


@pytest.mark.parametrize("layout", ["denom", "garbage", None, 1, np.array(["numerator"])])
def test_factor_toarray_checks_layout_like_jacobian(layout):
    factor, _ = rank_one_factor()
    with pytest.raises(ValueError) as core:
        fastjac.jacobian("exp", np.ones(2), layout=layout)
    with pytest.raises(ValueError) as ours:
        factor.toarray(layout)
    assert str(ours.value) == str(core.value)


def test_factor_toarray_layouts():
    factor, dense = rank_one_factor()
    np.testing.assert_allclose(factor.toarray(), dense, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(factor.toarray("numerator"), dense, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(factor.toarray("denominator"), dense.T, rtol=1e-13, atol=1e-15)


# -- Factor: F @ v, F.dot, u @ F, F.T, no silent object array -------------------------------

def random_factors():
    """(factor, its dense matrix) for each structure: diagonal + low rank,
    low rank only, diagonal only, a row, a column, structurally zero."""
    m, n, k = 6, 6, 2
    d = RNG.standard_normal(n)
    U, V = RNG.standard_normal((m, k)), RNG.standard_normal((n, k))
    g, c = RNG.standard_normal(n), RNG.standard_normal(m)
    U3 = RNG.standard_normal((4, 3))
    V3 = RNG.standard_normal((n, 3))
    return [
        (Factor((m,), (n,), d=d, U=U, V=V), np.diag(d) + U @ V.T),
        (Factor((4,), (n,), U=U3, V=V3), U3 @ V3.T),
        (Factor.diagonal(d), np.diag(d)),
        (Factor.row(g), g[None, :]),
        (Factor.column(c), c[:, None]),
        (Factor.zero((m,), (n,)), np.zeros((m, n))),
        (Factor.zero((4,), (n,)), np.zeros((4, n))),
    ]


def test_factor_times_vector_and_matrix():
    for factor, dense in random_factors():
        m, n = dense.shape
        v = RNG.standard_normal(n)
        cols = RNG.standard_normal((n, 3))
        u = RNG.standard_normal(m)
        rows = RNG.standard_normal((2, m))
        np.testing.assert_allclose(factor @ v, dense @ v, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(factor.dot(v), dense @ v, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(factor @ cols, dense @ cols, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(factor.dot(list(v)), dense @ v, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(u @ factor, u @ dense, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(rows @ factor, rows @ dense, rtol=1e-13, atol=1e-14)
        assert (factor @ v).shape == (m,) and (factor @ cols).shape == (m, 3)
        assert (rows @ factor).shape == (2, n)


def test_factor_times_vector_on_the_expression_result():
    factor, dense = rank_one_factor()
    v = RNG.standard_normal(5)
    np.testing.assert_allclose(factor @ v, dense @ v, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(factor.dot(np.c_[v, 2 * v]), dense @ np.c_[v, 2 * v],
                               rtol=1e-13, atol=1e-15)


def test_factor_times_vector_uses_the_structure():
    # n = 10**6 and rank 1: the matrix would be 8 TB; the product is 2n numbers of work
    n = 10 ** 6
    a, b, d = RNG.standard_normal(n), RNG.standard_normal(n), RNG.standard_normal(n)
    factor = Factor((n,), (n,), d=d, U=a, V=b)
    v = RNG.standard_normal(n)
    np.testing.assert_allclose(factor @ v, d * v + a * (b @ v), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(v @ factor, d * v + b * (a @ v), rtol=1e-12, atol=1e-9)


def test_factor_transpose_keeps_the_structure():
    for factor, dense in random_factors():
        t = factor.T
        assert isinstance(t, Factor)
        assert t.y_shape == factor.x_shape and t.x_shape == factor.y_shape
        assert t.rank == factor.rank and (t.d is None) == (factor.d is None)
        assert t.structurally_zero == factor.structurally_zero
        np.testing.assert_allclose(t.toarray(), dense.T, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(t.toarray("denominator"), dense, rtol=1e-13, atol=1e-14)
    factor, dense = rank_one_factor()
    np.testing.assert_allclose(factor.T.toarray(), dense.T, rtol=1e-13, atol=1e-15)


def test_factor_is_not_silently_an_array():
    factor, _ = rank_one_factor()
    with pytest.raises(TypeError, match=r"not an array: call \.toarray\(layout\).*"
                                        r"format='dense'"):
        np.asarray(factor)
    with pytest.raises(TypeError, match="toarray"):
        np.array(factor)


def test_factor_product_shapes_are_checked():
    factor, _ = rank_one_factor()
    with pytest.raises(ValueError, match=r"Factor has shape \(5, 5\) and the operand has "
                                         r"shape \(4,\)"):
        factor @ np.ones(4)
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(4, 2\)"):
        factor.dot(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(5, 2, 1\)"):
        factor @ np.ones((5, 2, 1))
    with pytest.raises(ValueError, match=r"operand has shape \(3,\) and the Factor has "
                                         r"shape \(5, 5\)"):
        np.ones(3) @ factor
    with pytest.raises(TypeError, match="numeric"):
        factor.dot(np.array(["a"] * 5))


# -- a list of expressions, one variable at a time ---------------------------------------

def test_stacked_outputs_by_one_variable():
    x, y = fj.var("x"), fj.var("y")
    G = fj.compile([fj.sum(x * x * y), fj.dot(x, fj.exp(x))])
    xv, yv = RNG.standard_normal(4), 1.5
    dfx, dgx = 2 * xv * yv, np.exp(xv) * (1 + xv)
    jx = G.jacobian("x", x=xv, y=yv)
    assert jx.shape == (2, 4)
    np.testing.assert_allclose(jx, np.array([dfx, dgx]), rtol=1e-13)
    jy = G.jacobian("y", x=xv, y=yv)
    assert jy.shape == (2,)
    np.testing.assert_allclose(jy, [np.sum(xv * xv), 0.0], rtol=1e-13)
    # the numbers of wrt=[name]; the layouts of the dense and sparse formats
    np.testing.assert_array_equal(jx, G.jacobian(["x"], x=xv, y=yv))
    dense = G.jacobian("x", x=xv, y=yv, format="dense", layout="denominator")
    np.testing.assert_allclose(dense, np.array([dfx, dgx]).T, rtol=1e-13)
    out = np.empty((2, 4))
    assert G.jacobian("x", x=xv, y=yv, out=out) is out
    np.testing.assert_allclose(out, np.array([dfx, dgx]), rtol=1e-13)
    value, jac = G.value_and_jacobian("y", x=xv, y=yv)
    np.testing.assert_allclose(value, (np.sum(xv * xv * yv), xv @ np.exp(xv)), rtol=1e-13)
    np.testing.assert_allclose(jac, [np.sum(xv * xv), 0.0], rtol=1e-13)
    X = RNG.standard_normal((2, 3))
    jX = fj.compile([fj.sum(x * x), fj.sum(fj.sin(x))]).jacobian("x", x=X)
    assert jX.shape == (2, 2, 3)
    np.testing.assert_allclose(jX, np.array([2 * X, np.cos(X)]), rtol=1e-13)


def test_stacked_outputs_default_wrt_of_one_name():
    x, y = fj.var("x"), fj.var("y")
    fg = fj.compile([3 * x ** 2 * y, 2 * x + y ** 8], wrt="x")
    np.testing.assert_allclose(fg.jacobian(x=2.0, y=1.0), [12.0, 2.0], rtol=1e-15)


def test_stacked_element_wise_outputs_still_refused():
    x = fj.var("x")
    with pytest.raises(ValueError, match="scalar-valued"):
        fj.compile([x * x, fj.sum(x)]).jacobian("x", x=np.ones(3))


# -- python -m fastjac: a small command line ---------------------------------------------

def cli_env():
    """The environment of a child that imports this fastjac."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastjac.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastjac", *args], capture_output=True,
                          text=True, env=cli_env(), timeout=120)


HEADINGS = ["1. Layouts", "2. Element-wise binary", "3. Element-wise unary",
            "4. Scalar expansion", "5. Sum reduction", "6. The chain rule", "7. Batches"]


def headings(text):
    return [line for line in text.splitlines() if line[:1].isdigit() and line[1:3] == ". "]


def test_cli_help_and_version():
    result = run_cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: python -m fastjac")
    for option in ("--version", "--list", "--section N"):
        assert option in result.stdout
    assert headings(result.stdout) == [] and len(result.stdout.splitlines()) < 20
    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == \
        (0, f"fastjac {fastjac.__version__}\n", "")


def test_cli_lists_and_picks_sections():
    listed = run_cli("--list")
    assert listed.returncode == 0 and listed.stderr == ""
    lines = listed.stdout.splitlines()
    assert len(lines) == len(HEADINGS)
    assert all(line.startswith(h) for line, h in zip(lines, HEADINGS))
    one = run_cli("--section", "6")
    assert one.returncode == 0 and one.stderr == ""
    found = headings(one.stdout)
    assert len(found) == 1 and found[0].startswith(HEADINGS[5])
    assert "[[12. 12.]" in one.stdout            # d(3x^2 y)/dx, d(3x^2 y)/dy at (2, 1)
    found = headings(run_cli("-s", "2", "-s", "4").stdout)
    assert len(found) == 2
    assert found[0].startswith(HEADINGS[1]) and found[1].startswith(HEADINGS[3])
    bad = run_cli("--section", "9")
    assert bad.returncode == 2 and "invalid choice: 9" in bad.stderr and bad.stdout == ""


def test_cli_default_runs_every_section_once():
    result = run_cli()
    assert result.returncode == 0 and result.stderr == ""
    found = headings(result.stdout)
    assert len(found) == len(HEADINGS)
    assert all(line.startswith(h) for line, h in zip(found, HEADINGS))


def test_cli_closed_pipe_is_quiet():
    # the reader is gone before the demo writes anything: every write fails
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "fastjac"], stdout=write_end,
                                stderr=subprocess.PIPE, env=cli_env(), timeout=120)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, b"")
    # and as a user types it
    shell = subprocess.run(["bash", "-c", f'"{sys.executable}" -m fastjac | head -1; '
                            'exit "${PIPESTATUS[0]}"'],
                           capture_output=True, text=True, env=cli_env(), timeout=120)
    assert shell.returncode == 0 and shell.stderr == ""
    assert shell.stdout.startswith(f"fastjac {fastjac.__version__}:")


# -- error messages that name what works -------------------------------------------------

def test_dia_memory_error_names_the_formats_that_fit():
    big = np.ones(1_000_000)             # DIA of the 1 x 10^6 gradient: 10^6 x 10^6 numbers
    with pytest.raises(MemoryError) as caught:
        fastjac.sum_gradient(None, big, format="dia")
    message = str(caught.value)
    assert "DIA storage" in message and "a sparse format" not in message
    assert "use format='csr', 'csc' or 'coo' (each stores the 1000000 entries once) or " \
           "format='compact'" in message
    csr = fastjac.sum_gradient(None, big, format="csr")
    assert csr.shape == (1, 1_000_000) and csr.nnz == 1_000_000
    with pytest.raises(MemoryError, match="use format='compact' or a sparse format"):
        fastjac.jacobian("exp", big, format="dense")


# -- layout= and compact results: documented, and true ------------------------------------

@pytest.mark.parametrize("function", [fastjac.jacobian, fastjac.sum_gradient,
                                      fastjac.CompiledExpression.jacobian])
def test_docstrings_say_layout_leaves_compact_results_alone(function):
    doc = " ".join(function.__doc__.split())
    assert "layout has no effect" in doc or "compact result is the same in both layouts" in doc


def test_layout_leaves_compact_results_alone():
    x = RNG.uniform(0.5, 2.0, (2, 3))
    for layout in ("numerator", "denominator"):
        np.testing.assert_allclose(fastjac.jacobian("log", x, layout=layout), 1 / x, rtol=1e-15)
        np.testing.assert_allclose(fastjac.sum_gradient("square", x, layout=layout), 2 * x,
                                   rtol=1e-15)
        f = fj.compile(fj.sum(fj.var("x") ** 2))
        np.testing.assert_allclose(f.jacobian(x=x, layout=layout), 2 * x, rtol=1e-15)
