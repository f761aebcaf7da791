"""Smoke test of the benchmark suite (benchmarks/), so that it cannot rot.

Runs the harness on n = 16 with fastjac and NumPy only (the rivals are
optional extras and may be missing), renders the report, and runs the
command line once in quick mode. Nothing here asserts a timing.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _harness, compare  # noqa: E402


def test_discover_finds_every_family():
    names = [name for name, _ in _harness.discover()]
    assert {"elementwise", "expand", "reduce"} <= set(names)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cases_are_well_formed(dtype):
    for family, module in _harness.discover():
        cases = module.cases(16, np.dtype(dtype))
        if family == "dask" and not cases:
            continue                    # Dask is optional: no cases without it
        assert cases, family
        assert any(c.quick for c in cases), f"{family} has no --quick case"
        names = [c.name for c in cases]
        assert len(names) == len(set(names)), f"duplicate case names in {family}"
        for c in cases:
            assert c.kind in ("memory", "compute")
            assert c.n == 16 and c.nbytes >= 0
            assert {r.name for r in c.rivals} <= set(_harness.ROUTES)


def _quick_results(n=16, dtype=np.float64):
    results = []
    for family, module in _harness.discover(("elementwise", "expand", "reduce")):
        for case in [c for c in module.cases(n, np.dtype(dtype)) if c.quick][:2]:
            case = _harness.select(case, _harness.GROUPS["fastjac"])
            results.append(_harness.run_case(case, quick=True, log=lambda m: None))
    return results


def test_quick_path_checks_numpy_against_fastjac():
    results = _quick_results()
    assert results
    for r in results:
        assert "fastjac" in r["times"], r
        assert r["times"]["fastjac"]["median"] > 0
        # NumPy's hand-written formula agrees with fastjac on every case
        assert not any("wrong" in note or "error" in note for note in r["notes"].values()), r
        assert "numpy" in r["times"], r


def test_a_wrong_or_missing_rival_is_a_note_not_a_failure():
    case = _harness.discover(("elementwise",))[0][1].cases(16, np.dtype(np.float64))[0]
    case.rivals = [
        _harness.Rival("numpy", lambda: (lambda: np.full(16, 42.0))),     # wrong answer
        _harness.Rival("jax", lambda: (_ for _ in ()).throw(_harness.Skip("jax is missing"))),
        _harness.Rival("torch", lambda: 1 / 0),                          # broken setup
    ]
    result = _harness.run_case(case, quick=True, log=lambda m: None)
    assert result["notes"]["numpy"].startswith("wrong answer")
    assert result["notes"]["jax"] == "jax is missing"
    assert result["notes"]["torch"].startswith("error: ZeroDivisionError")
    assert set(result["times"]) >= {"fastjac"} and "numpy" not in result["times"]


def test_a_rival_is_compared_with_fastjac_timed_beside_it():
    """A rival group's worker times fastjac in the same rounds (``beside``), and
    the rival's ratio is taken against that time, not the fastjac group's."""
    case = _harness.discover(("elementwise",))[0][1].cases(16, np.dtype(np.float64))[0]
    case.rivals = [_harness.Rival("numba", lambda: case.fastjac)]
    result = _harness.run_case(_harness.select(case, ("numba", "fastjac_alloc")), quick=True,
                               log=lambda m: None, time_fastjac=False, beside=True)
    assert set(result["times"]) == {"numba"}
    assert set(result["beside"]) == {"fastjac", "fastjac_alloc"}
    t = lambda s: {"median": s}                                      # noqa: E731
    merged = {"times": {"fastjac": t(1.0), "numba": t(3.0), "numpy_out": t(3.0)},
              "beside": {"numba": {"fastjac": t(2.0), "fastjac_alloc": t(5.0)}}}
    assert _harness.ratio(merged, "numba") == 1.5                   # 3 / the fastjac beside it
    assert _harness.ratio(merged, "numpy_out") == 3.0               # timed in fastjac's group
    assert _harness.ratio(merged, "fastjac") is None
    assert _harness.ratio(merged, "jax") is None


def test_report_renders(tmp_path):
    report = {"machine": {"date": "2026-01-01 00:00 UTC", "python": "3", "numpy": np.__version__,
                          "cpu": "test"},
              "quick": True, "sizes": [16], "dtypes": ["float64"], "groups": {},
              "cases": _quick_results(), "bandwidth": {
                  "gbps": {"copy": 10.0, "triad": 12.0}, "median_gbps": {}, "best_gbps": 12.0,
                  "threads": 1, "elements": 1 << 20, "method": "test", "note": ""}}
    text = compare.markdown(report)
    assert "Summary, float64" in text and "Targets" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{compare.START}\nSTALE-BLOCK\n{compare.END}\nrest\n")
    compare.update_readme(report, tmp_path, readme=readme)
    new = readme.read_text()
    assert new.startswith("intro\n") and new.endswith("rest\n") and "STALE-BLOCK" not in new
    json.dumps(report)


def test_command_line_quick_run(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--sizes", "16",
         "--groups", "fastjac", "--no-extras", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["cases"] and (out / "results.md").exists()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_family_numpy_agrees_with_fastjac(dtype):
    """Every loss case (value+grad, hvp, Hessian diagonal, dense Hessian) at
    16 x 10 and 1000 x {10, 100}: the hand-written NumPy formula passes the
    answer check, value and gradient joined (``_harness.to_numpy``)."""
    (_, module), = _harness.discover(("loss",))
    for n in (16, 1000):
        cases = module.cases(n, np.dtype(dtype))
        assert {c.name.split(",")[0] for c in cases} == {
            "value+grad", "hvp", "value+grad+hdiag", "dense Hessian"}
        for case in cases:
            result = _harness.run_case(_harness.select(case, ("numpy",)), quick=True,
                                       log=lambda m: None)
            assert "numpy" in result["times"], (case.name, result["notes"])


def test_loss_family_check_sees_the_value_beside_the_gradient():
    # a rival whose gradient is right but whose value is off by 1e-6 relative
    (_, module), = _harness.discover(("loss",))
    case = [c for c in module.cases(1000, np.dtype(np.float64))
            if c.name.startswith("value+grad,")][0]
    value, grad = case.fastjac()
    case.rivals = [_harness.Rival("numpy", lambda: (lambda: (value * (1 + 1e-6), grad.copy()))),
                   _harness.Rival("jax", lambda: (lambda: (value, grad[::-1].copy())))]
    result = _harness.run_case(case, quick=True, log=lambda m: None)
    assert result["notes"]["numpy"].startswith("wrong answer (max abs error")
    assert result["notes"]["jax"].startswith("wrong answer")
    assert _harness.to_numpy((value, grad)).shape == (1 + grad.size,)
