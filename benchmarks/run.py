"""Run the fastjac benchmark suite: every family against every rival, in one run.

    python benchmarks/run.py                 # full: n = 16 .. 10^7, float64 and float32
    python benchmarks/run.py --quick         # a representative subset, under a minute
    python benchmarks/run.py --readme        # ... and rewrite docs/performance.md's bench block

Writes ``results.md``, ``results.json`` and ``plot_<family>.png`` into
``--out`` (default ``benchmarks/results/``, git-ignored). Rivals that are
not installed are skipped with a note (``pip install -e ".[bench]"``).

Steps: the machine's streaming bandwidth (``_bandwidth.py``); then one
worker process per library group (``_harness.GROUPS``) times the cases of
every ``bench_*.py`` family, one group after the other; then the memory of
compact, sparse and dense results and the import cost of fastjac; then the
report (``compare.py``).
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FULL_SIZES = (16, 1_000, 100_000, 10_000_000)
QUICK_SIZES = (16, 100_000)
# the library whose presence decides whether a group's worker runs
GROUP_LIBRARY = {"fastjac": "fastjac", "numexpr": "numexpr", "numba": "numba",
                 "jax": "jax", "torch": "torch", "autograd": "autograd", "sklearn": "sklearn"}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a subset of each family at n = 16 and 10^5, float64 (under a minute)")
    p.add_argument("--sizes", help="comma-separated n (default 16,1000,100000,10000000)")
    p.add_argument("--dtypes", help="comma-separated dtypes (default float64,float32)")
    p.add_argument("--families", help="comma-separated families (default: every bench_*.py)")
    p.add_argument("--groups", help="comma-separated library groups to time "
                   "(default: all: fastjac,numexpr,numba,jax,torch,autograd,sklearn)")
    p.add_argument("--out", default=str(HERE / "results"), help="output directory")
    p.add_argument("--readme", action="store_true",
                   help="rewrite docs/performance.md between <!-- bench:start --> and <!-- bench:end -->")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the bandwidth probe, memory and import-cost measurements")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--jsonl", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = tuple(int(float(s)) for s in args.sizes.split(",")) if args.sizes else (
        QUICK_SIZES if args.quick else FULL_SIZES)
    args.dtypes = tuple(args.dtypes.split(",")) if args.dtypes else (
        ("float64",) if args.quick else ("float64", "float32"))
    args.families = tuple(args.families.split(",")) if args.families else None
    from benchmarks._harness import GROUPS
    args.groups = tuple(args.groups.split(",")) if args.groups else tuple(GROUPS)
    return args


def log(message):
    print(message, file=sys.stderr, flush=True)


# -- worker processes ------------------------------------------------------------------

def worker(args):
    """Time one group's routes; write one JSON line per case, then versions."""
    from benchmarks import _harness, _memory
    _harness.STREAM["build_dir"] = Path(args.out) / "build"
    from benchmarks import _rivals
    _rivals.CACHE_DIR["path"] = Path(args.out).resolve() / "build" / "numba"
    if args.worker == "memory":
        with open(args.jsonl, "w") as f:
            f.write(json.dumps({"memory": _memory.measure(args.quick)}) + "\n")
        return
    with open(args.jsonl, "w") as f:
        count = 0
        t0 = time.perf_counter()
        for result in _harness.run_group(args.worker, args.sizes, args.dtypes,
                                         args.families, args.quick, log):
            f.write(json.dumps(result) + "\n")
            f.flush()
            count += 1
            if count % 10 == 0 and "n" in result:
                log(f"  [{args.worker}] {count} cases, {time.perf_counter() - t0:.0f} s "
                    f"(n={result['n']} {result['dtype']})")
        versions = {}
        if args.worker != "fastjac":
            from benchmarks import _rivals
            info = _rivals.versions()
            versions = {k: v for k, v in info.items() if k == args.worker}
        f.write(json.dumps({"versions": versions}) + "\n")


def spawn(group, args, tmp):
    path = Path(tmp) / f"{group}.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", group,
           "--jsonl", str(path), "--sizes", ",".join(map(str, args.sizes)),
           "--dtypes", ",".join(args.dtypes), "--out", str(args.out)]
    if args.families:
        cmd += ["--families", ",".join(args.families)]
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(ROOT))
    elapsed = time.perf_counter() - t0
    lines = []
    if path.exists():
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if proc.returncode != 0:
        log(f"  [{group}] worker exited with {proc.returncode}; keeping its {len(lines)} lines")
    return lines, elapsed, proc.returncode


# -- the machine --------------------------------------------------------------------

def machine():
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "platform": platform.platform(),
            "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", platform.processor())
        info["caches"] = {k: fields[k] for k in ("L1d cache", "L2 cache", "L3 cache") if k in fields}
        flags = fields.get("Flags", "").split()
        wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512vl", "avx512bw")
        info["isa"] = [f for f in wanted if f in flags]
        info["hypervisor"] = fields.get("Hypervisor vendor", "")
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except OSError:
        pass
    info["env"] = {k: os.environ.get(k) for k in (
        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
        if os.environ.get(k) is not None}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                        capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    import numpy
    info["numpy"] = numpy.__version__
    try:
        import fastjac
        from fastjac._config import config
        info["fastjac"] = {k: str(v) for k, v in config().items()}
        info["fastjac_path"] = str(Path(fastjac.__file__).parent)
    except Exception as exc:                    # noqa: BLE001 - reported, not fatal
        info["fastjac"] = {"error": repr(exc)}
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api",
                                                      "num_threads", "version")}
                               for p in threadpool_info()]
    except Exception:                           # noqa: BLE001 - optional
        pass
    return info


# -- import cost ----------------------------------------------------------------------

IMPORT_PROBE = ("import sys, time; t0 = time.perf_counter(); import numpy; "
                "t1 = time.perf_counter(); import fastjac; t2 = time.perf_counter(); "
                "print(t1 - t0, t2 - t1, 'scipy' in sys.modules)")


def import_cost(quick):
    """Median seconds of ``import numpy`` and of ``import fastjac`` after it."""
    import statistics
    runs = 5 if quick else 21
    numpy_s, fastjac_s, scipy = [], [], False
    proc_numpy, proc_both = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True,
                             text=True, cwd=tempfile.gettempdir())
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1:]}
        a, b, c = out.stdout.split()
        numpy_s.append(float(a))
        fastjac_s.append(float(b))
        scipy = scipy or c == "True"
        for target, code in ((proc_numpy, "import numpy"), (proc_both, "import numpy, fastjac")):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir())
            target.append(time.perf_counter() - t0)
    return {"numpy_ms": 1e3 * statistics.median(numpy_s),
            "fastjac_after_numpy_ms": 1e3 * statistics.median(fastjac_s),
            "process_numpy_ms": 1e3 * statistics.median(proc_numpy),
            "process_numpy_fastjac_ms": 1e3 * statistics.median(proc_both),
            "imports_scipy": scipy, "runs": runs}


# -- main ---------------------------------------------------------------------------

def main(argv=None):
    args = parse(argv)
    if args.worker:
        worker(args)
        return 0
    from benchmarks import _bandwidth, compare
    from benchmarks._harness import GROUPS
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"machine": machine(), "quick": args.quick, "sizes": list(args.sizes),
              "dtypes": list(args.dtypes), "groups": {}, "cases": [], "errors": []}
    log(f"fastjac benchmarks: n={list(args.sizes)} {list(args.dtypes)} "
        f"{'(quick subset)' if args.quick else ''}")

    if not args.no_extras:
        log("bandwidth probe ...")
        report["bandwidth"] = _bandwidth.probe(out_dir / "build", quick=args.quick)
        log(f"  best {report['bandwidth']['best_gbps']:.1f} GB/s "
            f"({report['bandwidth']['method']})")

    merged = {}
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in args.groups:
            library = GROUP_LIBRARY[group]
            if importlib.util.find_spec(library) is None:
                note = f"{library} is not installed (pip install -e \".[bench]\")"
                report["groups"][group] = {"skipped": note}
                log(f"{group}: skipped, {note}")
                continue
            log(f"{group}: timing {', '.join(GROUPS[group])} ...")
            lines, elapsed, code = spawn(group, args, tmp)
            report["groups"][group] = {"seconds": round(elapsed, 1), "exit": code}
            for line in lines:
                if "versions" in line:
                    versions.update(line["versions"])
                    continue
                if "error" in line:
                    if line["error"] not in report["errors"]:
                        report["errors"].append(line["error"])
                    continue
                key = (line["family"], line["name"], line["n"], line["dtype"])
                if key not in merged:
                    merged[key] = {k: line[k] for k in ("family", "name", "kind", "n",
                                                        "dtype", "nbytes")}
                    merged[key].update(times={}, notes={})
                    for k in ("trivial",):
                        if k in line:
                            merged[key][k] = line[k]
                merged[key]["times"].update(line["times"])
                merged[key]["notes"].update(line["notes"])
                if line.get("beside"):          # fastjac timed in this group's process
                    merged[key].setdefault("beside", {})[group] = line["beside"]
            log(f"  {group}: {sum('times' in x for x in lines)} cases in {elapsed:.0f} s")
        report["versions"] = versions
        report["cases"] = list(merged.values())

        if not args.no_extras:
            log("memory of compact, sparse and dense results ...")
            lines, _, _ = spawn("memory", args, tmp)
            report["memory"] = lines[0]["memory"] if lines else {"error": "worker failed"}
            log("import cost ...")
            report["import"] = import_cost(args.quick)
    report["seconds"] = round(time.perf_counter() - started, 1)

    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    compare.write_report(report, out_dir)
    log(f"wrote {out_dir / 'results.md'}, results.json and plots in {report['seconds']:.0f} s")
    if args.readme:
        compare.update_readme(report, out_dir)
        log("rewrote the README bench block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
