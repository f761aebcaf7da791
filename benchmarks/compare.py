"""The report: speed = rival time / fastjac time, from a results.json.

    python benchmarks/compare.py [benchmarks/results/results.json] [--readme]

prints the summary (and with ``--readme`` rewrites docs/performance.md between
``<!-- bench:start -->`` and ``<!-- bench:end -->``, copying one plot to
``benchmarks/plots/``); ``run.py`` calls ``write_report`` after a run to
write ``results.md`` and the ``plot_<family>.png`` files.

How a ratio is formed: a rival that fills a preallocated array (NumPy
``out=``, numexpr, numba) is divided by fastjac's ``jacobian(..., out=o)``;
a rival that allocates its result (NumPy, JAX, PyTorch, autograd) by
fastjac's allocating call. A library's ratio for a kernel is that of its
cheapest route (e.g. numba: the serial or the parallel loop, whichever is
faster at that n). A ratio above 1 means fastjac is faster. The fastjac
time of a rival's ratio is the one measured beside it, in the same process
and rounds (``_harness.ratio``).
"""
import json
import math
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import ROUTES, geomean, ratio  # noqa: E402

LIBRARIES = {
    "NumPy": ("numpy", "numpy_out"),
    "numexpr": ("numexpr",),
    "numba": ("numba", "numba_par"),
    "JAX": ("jax",),
    "PyTorch": ("torch", "torch_vjp"),
    "autograd": ("autograd",),
    "scikit-learn": ("sklearn", "sklearn_setup"),
}
DENSE = {"JAX jacfwd": "jax_dense", "PyTorch jacobian": "torch_dense"}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
LIMIT = 1.15          # target: memory-bound kernels within 1.15x of the bandwidth bound
CORE_FAMILIES = ("elementwise", "expand", "reduce")
# Issue 5: the composed expression (its value and d/dw at n = 10^7) and the
# neuron (N = 10^6 rows: the expr family's case at n >= 10^6) within 1.3x of
# their bounds: (label, name prefix in the expr family, least n)
EXPR_LIMIT = 1.3
EXPR_TARGETS = (
    ("composed expression `maximum(w*x+3, 0) - w/x`, value + d/dw, n = 10⁷",
     "maximum(w*x+3,0)-w/x", 10_000_000),
    ("composed expression `maximum(w*x+3, 0)*x - w` (no division), value + d/dw, n = 10⁷",
     "maximum(w*x+3,0)*x-w", 10_000_000),
    ("neuron dC/dw, N = 10⁶, n = 16, one read of X (and y)", "neuron", 1_000_000),
)


# -- numbers ------------------------------------------------------------------------

def library_ratio(case, library, stat="median"):
    """(ratio, route) of the library's cheapest route for this case, or None."""
    found = [(ratio(case, r, stat), r) for r in LIBRARIES[library]]
    found = [(v, r) for v, r in found if v is not None]
    return min(found) if found else None


def bound(case, report):
    bw = report.get("bandwidth")
    if not bw or not case["nbytes"]:
        return None
    return case["nbytes"] / (bw["best_gbps"] * 1e9)


def fmt_time(seconds):
    if seconds is None:
        return "—"
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_ratio(r):
    if r is None or not math.isfinite(r):
        return "—"
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.0f}×"
    return f"{r:.2f}×" if r < 1 else f"{r:.1f}×"


def cases_by(report, **match):
    return [c for c in report["cases"] if all(c.get(k) == v for k, v in match.items())]


def families(report):
    seen = []
    for c in report["cases"]:
        if c["family"] not in seen:
            seen.append(c["family"])
    return seen


def sizes(report, dtype=None):
    return sorted({c["n"] for c in report["cases"] if dtype is None or c["dtype"] == dtype})


# -- sections -------------------------------------------------------------------------

def header(report):
    m = report["machine"]
    fj = m.get("fastjac", {})
    lines = [
        f"Measured {m['date']} on {m.get('cpu', '?')} ({m.get('cores')} cores"
        f"{', ' + m['hypervisor'] + ' VM' if m.get('hypervisor') else ''}, "
        f"{m.get('memory_gib', '?')} GiB; L3 {m.get('caches', {}).get('L3 cache', '?')}; "
        f"{' '.join(m.get('isa', []))}), Python {m['python']}, NumPy {m['numpy']}, "
        f"fastjac {fj.get('fastjac', '?')} ({fj.get('threads', fj.get('openmp_threads', '?'))} threads"
        f"{', ' + fj['simd'] + ' kernels' if fj.get('simd') else ''}"
        f"{', commit ' + m['commit'] if m.get('commit') else ''}).",
    ]
    rivals = []
    for name, info in report.get("versions", {}).items():
        if "version" in info:
            extra = f", {info['threads']} threads" if "threads" in info else ""
            rivals.append(f"{name} {info['version']}{extra}")
    skipped = [f"{g} ({v['skipped']})" for g, v in report.get("groups", {}).items()
               if "skipped" in v]
    if rivals:
        lines.append("Rivals: " + "; ".join(rivals) + ".")
    if skipped:
        lines.append("Skipped: " + "; ".join(skipped) + ".")
    if m.get("env"):
        lines.append("Environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()) + ".")
    if report.get("quick"):
        lines.append("**Quick mode**: a representative subset of each family; "
                     "not the figures of record.")
    return lines


def bandwidth_lines(report):
    bw = report.get("bandwidth")
    if not bw:
        return []
    rates = ", ".join(f"{k} {v:.1f}" for k, v in bw["gbps"].items())
    text = (f"Streaming bandwidth ({bw['method']}, {bw['threads']} threads, "
            f"{bw['elements'] * 8 >> 20} MiB arrays, best of the run): {rates} GB/s. "
            f"The bound of a kernel is its bytes / {bw['best_gbps']:.1f} GB/s "
            f"(the best of copy and triad, with ordinary or non-temporal stores).")
    return [text] + ([f"Note: {bw['note']}"] if bw.get("note") else [])


def summary_table(report, dtype, libraries=LIBRARIES, with_dense=True, stat="median"):
    """Rows: family x n. Cells: geometric mean of the library's ratio over the
    family's kernels, and the worst kernel's ratio."""
    cols = list(libraries) + (list(DENSE) if with_dense else [])
    out = ["| family | n | fastjac `out=` (geo. mean) | " + " | ".join(cols) + " |",
           "|---|---:|---:|" + "---:|" * len(cols)]
    for fam in families(report):
        for n in sizes(report, dtype):
            cs = cases_by(report, family=fam, n=n, dtype=dtype)
            if not cs:
                continue
            t = geomean([c["times"]["fastjac"][stat] for c in cs if "fastjac" in c["times"]])
            cells = []
            for col in cols:
                if col in DENSE:
                    rs = [ratio(c, DENSE[col], stat) for c in cs]
                else:
                    rs = [(library_ratio(c, col, stat) or (None,))[0] for c in cs]
                rs = [r for r in rs if r is not None]
                cells.append(f"{fmt_ratio(geomean(rs))} (min {fmt_ratio(min(rs))})" if rs else "—")
            out.append(f"| {fam} | {n:,} | {fmt_time(t if t == t else None)} | "
                       + " | ".join(cells) + " |")
    return out


def bound_ratio(case, report):
    """(fastjac / STREAM twin, fastjac / global bound): twin is None when not timed."""
    t = case["times"].get("fastjac")
    if not t:
        return None, None
    twin = case["times"].get("stream")
    b = bound(case, report)
    return (t["median"] / twin["median"] if twin else None,
            t["median"] / b if b else None)


def bandwidth_table(report, dtype):
    n = max(sizes(report, dtype), default=None)
    if n is None or n < 100_000:
        return []
    out = ["| kernel | kind | bytes | fastjac `out=` | STREAM, same bytes | fastjac / STREAM "
           "| bound at best GB/s | fastjac / bound | fastest rival | rival / fastjac |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for c in cases_by(report, n=n, dtype=dtype):
        if "fastjac" not in c["times"]:
            continue
        t = c["times"]["fastjac"]["median"]
        twin, glob = bound_ratio(c, report)
        best = None
        for lib in LIBRARIES:
            r = library_ratio(c, lib)
            if r and (best is None or r[0] < best[0]):
                best = (r[0], lib, r[1])
        out.append(f"| {c['family']}: {c['name']} | {c['kind']} | {c['nbytes'] / 1e6:.0f} MB | "
                   f"{fmt_time(t)} | {fmt_time(c['times'].get('stream', {}).get('median'))} | "
                   f"{fmt_ratio(twin)} | {fmt_time(bound(c, report))} | {fmt_ratio(glob)} | "
                   f"{best[2] if best else '—'} | {fmt_ratio(best[0]) if best else '—'} |")
    return out


def small_n_table(report, dtype="float64"):
    n = min(sizes(report, dtype), default=None)
    if n is None:
        return []
    cs = [c for c in cases_by(report, n=n, dtype=dtype) if "fastjac" in c["times"]
          and c["family"] in CORE_FAMILIES]
    if not cs:
        return []

    def stats(route):
        ts = [c["times"][route]["median"] for c in cs if route in c["times"]]
        if not ts:
            return "—"
        ts.sort()
        return f"{fmt_time(ts[len(ts) // 2])} ({fmt_time(ts[0])} – {fmt_time(ts[-1])})"
    routes = ["fastjac", "fastjac_alloc", "fastjac_kernel", "numpy", "numpy_out", "numexpr",
              "numba", "numba_par", "jax", "torch", "torch_vjp", "autograd"]
    out = [f"| route (n = {n}, {dtype}; elementwise, expand, reduce) | median over {len(cs)} "
           f"kernels (fastest – slowest) |",
           "|---|---|"]
    for r in routes:
        label = {"fastjac": "fastjac `jacobian(..., out=o)` / `sum_gradient`",
                 "fastjac_alloc": "fastjac, allocating",
                 "fastjac_kernel": "fastjac `kernel(op, wrt)(a, b, out)`"}.get(r, r)
        out.append(f"| {label} | {stats(r)} |")
    return out


def memory_table(report):
    mem = report.get("memory")
    if not mem or "rows" not in mem:
        return []
    out = ["| n | compact | CSR | dense (fastjac `format=\"dense\"`) | JAX jacfwd result "
           "| PyTorch jacobian result |", "|---:|---:|---:|---:|---:|---:|"]

    def b(v):
        if v is None:
            return "—"
        for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= size:
                return f"{v / size:.3g} {unit}"
        return f"{v} B"
    for row in mem["rows"]:
        f = row["formula"]
        if row["measured"]:
            out.append(f"| {row['n']:,} | {b(row.get('fastjac_compact'))} | "
                       f"{b(row.get('fastjac_csr'))} | {b(row.get('fastjac_dense'))} | "
                       f"{b(row.get('jax_jacfwd_result'))} | {b(row.get('torch_jacobian_result'))} |")
        else:
            out.append(f"| {row['n']:,} (computed) | {b(f['compact'])} | {b(f['csr'])} | "
                       f"{b(f['dense'])} | {b(f['dense'])} | {b(f['dense'])} |")
    return out


def import_lines(report):
    imp = report.get("import")
    if not imp:
        return []
    if "error" in imp:
        return [f"Import cost: could not be measured ({imp['error']})."]
    return [f"Import cost (median of {imp['runs']} fresh processes): `import numpy` "
            f"{imp['numpy_ms']:.1f} ms; `import fastjac` after it adds "
            f"{imp['fastjac_after_numpy_ms']:.1f} ms; whole process `python -c \"import numpy\"` "
            f"{imp['process_numpy_ms']:.0f} ms vs `import numpy, fastjac` "
            f"{imp['process_numpy_fastjac_ms']:.0f} ms. SciPy imported by `import fastjac`: "
            f"{'**yes**' if imp['imports_scipy'] else 'no'}."]


def expr_target(report, label, prefix, least_n, dt="float64"):
    """(target, met, evidence) of an issue-5 target: the expr family's case
    named ``prefix...`` at the largest n >= least_n, fastjac against its STREAM
    twin (met: within EXPR_LIMIT) and against the run's best GB/s. Without
    that n in the run, met is None and the evidence is from the largest n
    that has a twin; None when the run has no such case at all."""
    cs = [c for c in report["cases"] if c["family"] == "expr" and c["dtype"] == dt
          and c["name"].startswith(prefix) and "fastjac" in c["times"]]
    if not cs:
        return None
    target = (f"{label}: within {EXPR_LIMIT}× of the bandwidth bound (the STREAM kernel "
              f"moving the same bytes, timed beside it)")
    at = [c for c in cs if c["n"] >= least_n]
    c = max(at or [c for c in cs if "stream" in c["times"]] or cs, key=lambda c: c["n"])
    twin, glob = bound_ratio(c, report)
    t = c["times"]
    bw = report.get("bandwidth")
    evidence = (f"fastjac {fmt_time(t['fastjac']['median'])}, STREAM twin "
                f"({c['nbytes'] / 1e6:.1f} MB) "
                + (f"{fmt_time(t['stream']['median'])}: {twin:.2f}× the twin"
                   if twin else "not timed")
                + (f"; {glob:.2f}× the bound at the run's best {bw['best_gbps']:.1f} GB/s"
                   if glob else ""))
    if not at:
        return target, None, f"not run at n ≥ {least_n:,}; at n = {c['n']:,}: {evidence}"
    return target, (twin <= EXPR_LIMIT if twin else None), evidence


def targets(report):
    """(target, met, evidence) for each target of issues 3 and 5 (float64)."""
    rows = []
    dt = "float64"
    big = [c for c in report["cases"] if c["dtype"] == dt and c["n"] >= 1000]
    losses = []
    for c in big:
        for lib in LIBRARIES:
            r = library_ratio(c, lib)
            if r and r[0] < 1:
                losses.append(f"{c['family']} {c['name']} n={c['n']:,} {r[1]} {fmt_ratio(r[0])}")
    rows.append(("faster than every rival for every kernel at n ≥ 1000",
                 not losses if big else None,
                 f"{len(losses)} losses" + (": " + "; ".join(losses[:12]) +
                                           (" …" if len(losses) > 12 else "") if losses else "")))
    small = [c for c in report["cases"] if c["dtype"] == dt and c["n"] == 16 and not c.get("trivial")]
    losses = []
    for c in small:
        for lib in LIBRARIES:
            r = library_ratio(c, lib)
            if r and r[0] < 1:
                losses.append(f"{c['family']} {c['name']} {r[1]} {fmt_ratio(r[0])}")
    rows.append(("faster than every rival at n = 16 (kernels that are more than a copy or fill)",
                 not losses if small else None,
                 f"{len(losses)} losses" + (": " + "; ".join(losses[:12]) +
                                           (" …" if len(losses) > 12 else "") if losses else "")))
    nmax = max(sizes(report, dt), default=0)
    # the core kernels' bound (issue 3); the expr family's are issue 5's, below
    mem_cases = [c for c in cases_by(report, n=nmax, dtype=dt)
                 if c["kind"] == "memory" and c["family"] in CORE_FAMILIES
                 and "stream" in c["times"] and "fastjac" in c["times"]]
    if nmax >= 10_000_000 and mem_cases:
        over = [(bound_ratio(c, report)[0], c) for c in mem_cases]
        bad = [f"{c['family']} {c['name']} {fmt_ratio(r)}" for r, c in over if r > LIMIT]
        glob = [bound_ratio(c, report)[1] for c in mem_cases]
        glob = [g for g in glob if g]
        rows.append((f"memory-bound kernels (elementwise, expand, reduce) at n = 10⁷ within "
                     f"{LIMIT}× of the bandwidth bound "
                     f"(the STREAM kernel moving the same bytes, timed beside them)",
                     not bad, f"{len(over) - len(bad)}/{len(over)} within; "
                     f"geo. mean {fmt_ratio(geomean([r for r, _ in over]))}"
                     + (f" (against the run's best GB/s: {fmt_ratio(geomean(glob))})" if glob else "")
                     + ("; over: " + "; ".join(bad[:12]) if bad else "")))
    for label, prefix, least_n in EXPR_TARGETS:
        row = expr_target(report, label, prefix, least_n, dt)
        if row:
            rows.append(row)
    # the per-call targets concern jacobian / sum_gradient / kernel: the core families
    n16 = [c for c in cases_by(report, n=16, dtype=dt) if "fastjac" in c["times"]
           and c["family"] in CORE_FAMILIES]
    if n16:
        ts = sorted(c["times"]["fastjac"]["median"] for c in n16)
        rows.append(("n = 16 `jacobian(..., out=o)` / `sum_gradient` ≤ 1.0 µs", ts[-1] <= 1e-6,
                     f"slowest kernel {fmt_time(ts[-1])}, median kernel {fmt_time(ts[len(ts) // 2])}"
                     f", {sum(t <= 1e-6 for t in ts)}/{len(ts)} within"))
        ks = sorted(c["times"]["fastjac_kernel"]["median"] for c in n16
                    if "fastjac_kernel" in c["times"])
        if ks:
            rows.append(("n = 16 `fastjac.kernel` call ≤ 0.4 µs", ks[-1] <= 0.4e-6,
                         f"slowest kernel {fmt_time(ks[-1])}, median kernel "
                         f"{fmt_time(ks[len(ks) // 2])}, {sum(t <= 0.4e-6 for t in ks)}/{len(ks)} within"))
        for lib in ("JAX", "PyTorch"):
            rs = [library_ratio(c, lib) for c in n16]
            rs = [r[0] for r in rs if r]
            if rs:
                rows.append((f"n = 16 `jacobian`/`sum_gradient` ≥ 5× faster than {lib}",
                             min(rs) >= 5,
                             f"min {fmt_ratio(min(rs))}, geo. mean {fmt_ratio(geomean(rs))}"))
    rows += loss_targets(report)
    imp = report.get("import")
    if imp and "error" not in imp:
        rows.append(("`import fastjac` adds ≤ 20 ms to `import numpy`",
                     imp["fastjac_after_numpy_ms"] <= 20, f"{imp['fastjac_after_numpy_ms']:.1f} ms"))
        rows.append(("`import fastjac` never imports SciPy", not imp["imports_scipy"],
                     "SciPy " + ("imported" if imp["imports_scipy"] else "not imported")))
    return rows


# The loss family's targets (bench_loss.py): (label, case kind, rival routes or
# None for the read-once bound, least N for the bound)
LOSS_LIMIT = 1.3
LOSS_CALL_LIMIT = 2e-6
LOSS_ROUTES = ("numpy", "sklearn", "sklearn_setup", "jax", "torch")


def _loss_cases(report, kind, dt="float64"):
    return [c for c in report["cases"] if c["family"] == "loss" and c["dtype"] == dt
            and c["name"].split(",")[0] == kind and "fastjac" in c["times"]]


def _loss_faster(report, label, kind, routes):
    cs = _loss_cases(report, kind)
    found = [(ratio(c, r), r, c) for c in cs for r in routes]
    found = [(v, r, c) for v, r, c in found if v is not None]
    if not found:
        return None
    slow = [f"{c['name'].split(', ', 1)[1]} {r} {fmt_ratio(v)}" for v, r, c in found if v < 1]
    worst = min(found, key=lambda f: f[0])
    return (label, not slow,
            f"worst {worst[1]} {fmt_ratio(worst[0])} ({worst[2]['name'].split(', ', 1)[1]})"
            + (f"; slower: " + "; ".join(slow[:10]) + (" …" if len(slow) > 10 else "")
               if slow else f"; {len(found)} comparisons"))


def _loss_bound(report, label, kind, least_n=1_000_000):
    cs = [c for c in _loss_cases(report, kind) if "stream" in c["times"]]
    if not cs:
        return None
    top = max(c["n"] for c in cs)
    at = [c for c in cs if c["n"] == top]
    rs = [(bound_ratio(c, report)[0], c) for c in at]
    evidence = "; ".join(f"{c['name'].split(', ', 1)[1]}: "
                         f"{fmt_time(c['times']['fastjac']['median'])} vs "
                         f"{fmt_time(c['times']['stream']['median'])}, {r:.2f}×"
                         for r, c in rs)
    if top < least_n:
        return label, None, f"not run at N ≥ {least_n:,}; at n = {top:,}: {evidence}"
    return label, all(r <= LOSS_LIMIT for r, _ in rs), evidence


def loss_targets(report):
    """(target, met, evidence) rows of the loss family (float64), for those it ran."""
    rows = [
        _loss_bound(report, f"loss: logistic value+grad at N = 10⁶ (n = 10, 100) within "
                    f"{LOSS_LIMIT}× of one read of X and y (STREAM read, timed beside it)",
                    "value+grad"),
        _loss_faster(report, "loss: logistic value+grad faster than NumPy, scikit-learn, JAX "
                     "and PyTorch at every size", "value+grad",
                     ("numpy", "sklearn", "jax", "torch")),
        _loss_bound(report, f"loss: hvp at N = 10⁶ within {LOSS_LIMIT}× of one read of X and y",
                    "hvp"),
        _loss_faster(report, "loss: hvp faster than scikit-learn's gradient_hessian_product "
                     "+ hessp and JAX jvp(grad)", "hvp", ("sklearn_setup", "jax")),
        _loss_faster(report, "loss: hvp faster than scikit-learn's hessp alone (setup "
                     "excluded)", "hvp", ("sklearn",)),
        _loss_faster(report, "loss: dense Hessian faster than scikit-learn's gradient_hessian "
                     "and jax.hessian", "dense Hessian", ("sklearn", "jax")),
    ]
    calls = [c for c in _loss_cases(report, "value+grad") if c["n"] == 16]
    if calls:
        t = calls[0]["times"]["fastjac"]["median"]
        rows.append((f"loss: compiled-loss call value_and_jacobian at 16 × 10 ≤ "
                     f"{LOSS_CALL_LIMIT * 1e6:.0f} µs", t <= LOSS_CALL_LIMIT, fmt_time(t)))
    return [r for r in rows if r is not None]


def loss_tables(report, stat="median"):
    """Every route of every loss case: its time (``stat``: the median, or the
    best batch), and rival / fastjac (the fastjac time measured beside it)."""
    out = []
    what = "median time" if stat == "median" else "best batch"
    for dtype in report["dtypes"]:
        cs = [c for c in report["cases"] if c["family"] == "loss" and c["dtype"] == dtype]
        if not cs:
            continue
        out += [f"### loss, {dtype}: {what} (rival time / fastjac time beside it)", "",
                "| case | fastjac | read X once | fastjac / read | "
                + " | ".join(f"`{r}`" for r in LOSS_ROUTES) + " |",
                "|---|---:|---:|---:|" + "---:|" * len(LOSS_ROUTES)]
        for c in sorted(cs, key=lambda c: (c["name"].split(",")[0], c["n"], c["name"])):
            t = c["times"]
            twin = (t["fastjac"][stat] / t["stream"][stat]
                    if "fastjac" in t and "stream" in t else None)
            cells = []
            for r in LOSS_ROUTES:
                if r not in t:
                    cells.append("—")
                    continue
                q = ratio(c, r, stat)
                cells.append(f"{fmt_time(t[r][stat])} ({fmt_ratio(q)})")
            out.append(f"| {c['name']} | {fmt_time(t.get('fastjac', {}).get(stat))} | "
                       f"{fmt_time(t.get('stream', {}).get(stat))} | {fmt_ratio(twin)} | "
                       + " | ".join(cells) + " |")
        out.append("")
    return out


def targets_table(report):
    out = ["| target (float64) | met | measured |", "|---|---|---|"]
    for target, met, evidence in targets(report):
        mark = "n/a" if met is None else ("yes" if met else "**no**")
        out.append(f"| {target} | {mark} | {evidence} |")
    return out


def kernel_tables(report, dtype, n):
    out = []
    libs = list(LIBRARIES)
    for fam in families(report):
        cs = cases_by(report, family=fam, n=n, dtype=dtype)
        if not cs:
            continue
        out += [f"#### {fam}, n = {n:,}, {dtype}", "",
                "| kernel | fastjac `out=` | allocating | `kernel` | " + " | ".join(libs)
                + " | " + " | ".join(DENSE) + " |",
                "|---|---:|---:|---:|" + "---:|" * (len(libs) + len(DENSE))]
        for c in cs:
            t = c["times"]
            cells = []
            for lib in libs:
                r = library_ratio(c, lib)
                cells.append(f"{fmt_ratio(r[0])} `{r[1]}`" if r else "—")
            for route in DENSE.values():
                cells.append(fmt_ratio(ratio(c, route)))
            out.append(f"| {c['name']} | {fmt_time(t.get('fastjac', {}).get('median'))} | "
                       f"{fmt_time(t.get('fastjac_alloc', {}).get('median'))} | "
                       f"{fmt_time(t.get('fastjac_kernel', {}).get('median'))} | "
                       + " | ".join(cells) + " |")
        out.append("")
    return out


def notes(report):
    seen = {}
    for c in report["cases"]:
        for route, note in c["notes"].items():
            seen.setdefault((route, note), []).append(f"{c['family']} {c['name']} n={c['n']} {c['dtype']}")
    out = []
    for (route, note), where in sorted(seen.items()):
        example = where[0] + (f" and {len(where) - 1} more" if len(where) > 1 else "")
        out.append(f"- `{route}`: {note} ({example})")
    return out


# -- plots ----------------------------------------------------------------------------

def plot(report, out_dir, dtype="float64"):
    """One log-log plot per family: geometric-mean time over its kernels vs n."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    ns = sizes(report, dtype)
    for fam in families(report):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lines = {"fastjac (out=)": ("fastjac",), "fastjac kernel()": ("fastjac_kernel",)}
        lines.update({k: v for k, v in LIBRARIES.items()})
        lines.update({k: (v,) for k, v in DENSE.items()})
        for label, routes in lines.items():
            xs, ys = [], []
            for n in ns:
                ts = []
                for c in cases_by(report, family=fam, n=n, dtype=dtype):
                    cand = [c["times"][r]["median"] for r in routes if r in c["times"]]
                    if cand:
                        ts.append(min(cand))
                if ts:
                    xs.append(n)
                    ys.append(geomean(ts) * 1e6)
            if xs:
                style = {"linewidth": 3, "color": "black"} if label.startswith("fastjac (") else {}
                if label in DENSE:
                    style = {"linestyle": ":"}
                ax.plot(xs, ys, marker="o", label=label, **style)
        if report.get("bandwidth"):
            xs, ys = [], []
            for n in ns:
                bs = [bound(c, report) for c in cases_by(report, family=fam, n=n, dtype=dtype)]
                bs = [b for b in bs if b]
                if bs and n >= 100_000:
                    xs.append(n)
                    ys.append(geomean(bs) * 1e6)
            if xs:
                ax.plot(xs, ys, linestyle="--", color="gray", label="bandwidth bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (elements)")
        ax.set_ylabel(f"time per call, µs (geo. mean over kernels, {dtype})")
        ax.set_title(f"fastjac {fam}: {report['machine'].get('cpu', '')}, "
                     f"{report['machine']['date'][:10]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = Path(out_dir) / f"plot_{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# -- output ---------------------------------------------------------------------------

def markdown(report):
    lines = ["# fastjac benchmark results", ""]
    lines += header(report) + [""] + bandwidth_lines(report) + [""]
    lines += ["## Routes", ""] + [f"- `{k}`: {v}" for k, v in ROUTES.items()] + [""]
    lines += [__doc__.split("How a ratio is formed: ")[1].strip().replace("\n", " "), ""]
    lines += ["## Targets", ""] + targets_table(report) + [""]
    for dtype in report["dtypes"]:
        lines += [f"## Summary, {dtype}: rival time / fastjac time (medians)", ""]
        lines += summary_table(report, dtype) + [""]
    for dtype in report["dtypes"]:
        lines += [f"## The same from each route's best batch, {dtype}", "",
                  "On a shared machine the best batch shows what each route can do "
                  "when it is not disturbed; the medians above are the figures of record.",
                  ""]
        lines += summary_table(report, dtype, stat="best") + [""]
    for dtype in report["dtypes"]:
        bt = bandwidth_table(report, dtype)
        if bt:
            lines += [f"## Bandwidth bound at the largest n, {dtype}", ""] + bt + [""]
    lt = loss_tables(report)
    if lt:
        lines += ["## Losses over batches (the loss family, every route)", ""] + lt
        lines += ["On a shared machine the best batch shows what each route can do when it "
                  "is not disturbed; the medians above are the figures of record.", ""]
        lines += loss_tables(report, stat="best")
    sn = small_n_table(report)
    if sn:
        lines += ["## Per-call cost at small n", ""] + sn + [""]
    mt = memory_table(report)
    if mt:
        lines += ["## Memory of the Jacobian of w ⊗ x w.r.t. w (float64)", "",
                  "Measured with tracemalloc (peak over the call) for fastjac; JAX and "
                  "PyTorch by the bytes of the dense result they return. Rows marked "
                  "computed use n·8, n·12 + 4(n+1) and n²·8 bytes.", ""] + mt + [""]
    lines += import_lines(report) + [""]
    lines += ["## Every kernel", ""]
    for dtype in report["dtypes"]:
        for n in sizes(report, dtype):
            lines += kernel_tables(report, dtype, n)
    lines += ["## Notes (routes not timed)", ""] + notes(report) + [""]
    if report.get("errors"):
        lines += ["## Errors (cases not run)", ""] + [f"- {e}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def write_report(report, out_dir):
    out_dir = Path(out_dir)
    (out_dir / "results.md").write_text(markdown(report))
    plot(report, out_dir)


def readme_block(report, plot_rel):
    lines = [START, ""]
    lines += header(report) + [""]
    lines += ["Speed = rival time / fastjac time (above 1: fastjac is faster): geometric mean "
              "over each family's kernels, and the worst kernel; each library by its "
              "cheapest route. Reproduce with `python benchmarks/run.py --readme` (see "
              "[benchmarks/README.md](../benchmarks/README.md); rivals in the `bench` extra).", ""]
    lines += summary_table(report, "float64") + [""]
    lines += ["Targets (float64):", ""] + targets_table(report) + [""]
    lines += bandwidth_lines(report) + [""]
    n = max(sizes(report, "float64"), default=0)
    bw = [bound_ratio(c, report)[0] for c in cases_by(report, n=n, dtype="float64")
          if c["kind"] == "memory" and c["family"] in CORE_FAMILIES]
    bw = [r for r in bw if r]
    if bw:
        lines += [f"At n = {n:,}, the memory-bound kernels of the core families (elementwise, "
                  f"expand, reduce) take {fmt_ratio(geomean(bw))} the "
                  f"time of the STREAM kernel that moves the same bytes, timed beside them "
                  f"(geo. mean; {fmt_ratio(min(bw))} – {fmt_ratio(max(bw))}); see "
                  f"`results.md` for every kernel and for the compute-bound ones against "
                  f"the fastest rival.", ""]
    lines += small_n_table(report) + [""]
    mt = memory_table(report)
    if mt:
        lines += ["Memory of a diagonal Jacobian (float64; measured up to n = 2 000, computed "
                  "beyond):", ""] + mt + [""]
    lines += import_lines(report) + [""]
    if plot_rel:
        lines += [f"![time against n, element-wise family]({plot_rel})", ""]
    analysis = HERE / "analysis.md"
    if analysis.exists():
        lines += [analysis.read_text().strip(), ""]
    lines += [END]
    return "\n".join(lines)


def update_readme(report, out_dir, readme=ROOT / "docs" / "performance.md"):
    """Rewrite the block between START and END of ``readme``: the tables of
    ``report``, one plot (copied to benchmarks/plots/), and the hand-written
    findings of ``benchmarks/analysis.md`` (why a target is out of reach)."""
    src = Path(out_dir) / "plot_elementwise.png"
    plot_rel = None
    if src.exists():
        (HERE / "plots").mkdir(exist_ok=True)
        shutil.copyfile(src, HERE / "plots" / "elementwise.png")
        plot_rel = "../benchmarks/plots/elementwise.png"      # from docs/
    text = Path(readme).read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(head + readme_block(report, plot_rel) + tail)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    paths = [a for a in argv if not a.startswith("--")]
    path = Path(paths[0]) if paths else HERE / "results" / "results.json"
    report = json.loads(path.read_text())
    print("\n".join(header(report) + [""] + targets_table(report) + [""]
                    + summary_table(report, "float64")))
    if "--readme" in argv:
        write_report(report, path.parent)
        update_readme(report, path.parent)
        print(f"rewrote {ROOT / 'README.md'} bench block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
