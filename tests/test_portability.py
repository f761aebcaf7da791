"""Every CPU runs fastjac: the instruction-set level is chosen in one place
(fastjac._simd) and never exceeds what the CPU runs, whatever asks for it;
without a C compiler, compiled expressions run on the interpreter.

.ci/run runs this file (with the operator, expression and neuron tests)
under qemu-user on emulated CPUs without AVX and without AVX-512, with
FASTJAC_EXPECT_SIMD naming the level that CPU must get.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastjac
from fastjac import _simd

EXPECTED = os.environ.get("FASTJAC_EXPECT_SIMD")
# A child process would escape the emulator (qemu-user runs exec'd programs
# natively) unless started under it too.
EMULATOR = os.environ.get("FASTJAC_TEST_EMULATOR", "").split()


def _child(code, **env):
    full = {**os.environ, **env}
    done = subprocess.run(EMULATOR + [sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.skipif(EXPECTED is None, reason="FASTJAC_EXPECT_SIMD not set (set by the emulated-CPU runs)")
def test_the_emulated_cpu_gets_the_expected_level(capsys):
    assert _simd.cpu_level() == EXPECTED
    assert _simd.current() == EXPECTED
    fastjac.show_config()
    assert f"simd: {EXPECTED}" in capsys.readouterr().out


def test_show_config_names_the_level_in_use(capsys):
    fastjac.show_config()
    text = capsys.readouterr().out
    assert f"simd: {_simd.current()}" in text
    assert f"cpu_runs_up_to: {_simd.cpu_level()}" in text


@pytest.mark.parametrize("level", _simd.LEVELS)
def test_select_caps_a_level_the_cpu_lacks(level):
    before = _simd.current()
    try:
        got = _simd.select(level)
        top = _simd.LEVELS.index(_simd.cpu_level())
        assert _simd.LEVELS.index(got) <= min(_simd.LEVELS.index(level), top)
        assert got in _simd.available()
        assert _simd.current() == got
        # the capped loops run: a kernel, an expression and the neuron
        x = np.linspace(0.5, 2.0, 40_001)
        np.testing.assert_allclose(fastjac.jacobian("exp", x), np.exp(x), rtol=1e-15)
        f = fastjac.compile(fastjac.var("w") * fastjac.var("x") - fastjac.var("w") / 3.0)
        np.testing.assert_allclose(f.jacobian("w", w=x, x=x[::-1].copy()), x[::-1] - 1 / 3,
                                   rtol=1e-15)
    finally:
        _simd.select(before)


def test_why_unavailable_says_why():
    for level in _simd.LEVELS:
        reason = _simd.why_unavailable(level)
        assert (reason is None) == (level in _simd.available())
        if reason:
            assert level in reason


def test_a_level_above_the_cpu_is_never_imported():
    """Importing such a module may itself fault (with -mavx2 even its
    initialisation can use VEX encodings): select() must cap before importing."""
    import sys
    above = [lvl for lvl in _simd.built_levels()
             if _simd.LEVELS.index(lvl) > _simd.LEVELS.index(_simd.cpu_level())]
    if not above:
        pytest.skip(f"this CPU runs every level built ({', '.join(_simd.built_levels())})")
    before = _simd.current()
    try:
        for level in above:
            assert _simd.select(level) == _simd.cpu_level()
    finally:
        _simd.select(before)
    for level in above:
        assert f"fastjac._level_{level}" not in sys.modules


def test_bad_levels_are_refused_or_ignored():
    with pytest.raises(ValueError, match="SIMD level must be one of"):
        _simd.select("avx1024")
    # in the environment: a warning, never a failed import
    done = _child("import fastjac; print(fastjac._simd.current())",
                  FASTJAC_SIMD="avx1024")
    assert "FASTJAC_SIMD='avx1024' ignored" in done.stderr, done.stderr
    assert done.stdout.strip() == _simd.usable("avx512")


@pytest.mark.parametrize("asked", _simd.LEVELS)
def test_environment_caps_every_table(asked):
    done = _child("""
        import fastjac
        from fastjac import _simd, _jit
        print(_simd.current(), fastjac._config.config()["simd"])
    """, FASTJAC_SIMD=asked)
    level, shown = done.stdout.split()
    assert level == shown == _simd.usable(asked)


def test_no_level_is_built_for_the_build_machine_only():
    """A wheel built on an AVX-512 machine must run on any x86-64: the
    flags name instruction sets, never the build machine's (-march=native).
    (That the JIT uses the flags of the level in use is shown by the
    emulated-CPU runs: compiled with -mavx2, it would fault there.)"""
    assert _simd.COMPILER_FLAGS["baseline"] == []
    for flags in _simd.COMPILER_FLAGS.values():
        assert not any(flag.startswith(("-march", "-mtune", "-mcpu")) for flag in flags)


NO_COMPILER = """
    import numpy as np, fastjac as fj
    from fastjac import _jit
    n = 70_001
    w, x = np.linspace(0.5, 2, n), np.linspace(2, 0.5, n)
    f = fj.compile(fj.maximum(fj.var("w") * fj.var("x"), 1.0) - fj.var("x") / fj.var("w"))
    v, j = f.value_and_jacobian("w", w=w, x=x)
    np.save({path!r}, np.stack([v, j]))
    print(_jit.status()["compiled"], _jit.status()["error"] is not None)
"""


def test_without_a_compiler_on_path_the_numbers_are_the_same(tmp_path):
    """The compiler hidden for real (no CC, a PATH with none on it): the
    interpreter runs and gives the same bits as compiled code."""
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    hidden = _child(NO_COMPILER.format(path=str(tmp_path / "hidden.npy")),
                    **{**env, "PATH": str(tmp_path), "FASTJAC_JIT": "1"})
    assert hidden.stdout.split() == ["0", "True"]
    compiled = _child(NO_COMPILER.format(path=str(tmp_path / "compiled.npy")), FASTJAC_JIT="1")
    if compiled.stdout.split() != ["1", "False"]:
        pytest.skip(f"no working compiler here either: {compiled.stdout}")
    a, b = np.load(tmp_path / "hidden.npy"), np.load(tmp_path / "compiled.npy")
    assert np.array_equal(a, b)
    w, x = np.linspace(0.5, 2, 70_001), np.linspace(2, 0.5, 70_001)
    np.testing.assert_allclose(a[1], np.where(w * x > 1, x, np.where(w * x == 1, 0.5 * x, 0))
                               + x / w**2, rtol=1e-14)
