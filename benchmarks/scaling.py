"""Benchmark: how fedgwas scales with samples x variants, warm agents against cold, and against PLINK 2.

For each size (N samples x M variants, 3 sites, simulated with ``engine.simulate``, cached under
benchmarks/data/) and each model (``linear``: QT; ``logistic``: BT, PLINK 2's firth-fallback), in
one run on the same machine:

* ``plink2 --glm`` on the pooled fileset (``--threads 2``, OpenBLAS with one thread);
* ``fedgwas run STUDY.toml`` against site agents that are already serving (warm: started once per
  size, before the timed runs; the operator's normal path);
* ``fedgwas local`` (cold: it prepares the sites, starts 3 agent processes, runs, stops them);

and per run: wall time, bytes sent per site, peak RSS of every agent (and of its compute workers,
from the agent's log), of the coordinator and of PLINK 2. ``--dask-external`` attaches every agent
to a separate ``dask scheduler`` + ``dask worker`` started here on loopback. Each agent logs its peak RSS
(``ru_maxrss``) and its workers' after every task; the coordinator's comes from its own ``ru_maxrss``;
PLINK 2's is polled every 50 ms. Usage::

    python benchmarks/scaling.py --sizes 10000x25000,30000x25000 [--models linear,logistic]
        [--site-workers 0] [--dask-external WORKERS] [--skip-cold] [--plot docs/scaling.png]
    python benchmarks/scaling.py --report benchmarks/runs/scaling-*/result.json --plot docs/scaling.png

Results: a Markdown table on stdout and JSON in benchmarks/runs/scaling-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402  (installed with dask[distributed])

from benchmarks.linear_vs_plink2 import COVARIATES, ensure_plink2_with_openblas, simulate  # noqa: E402

PHENOTYPE = {"linear": "QT", "logistic": "BT"}
_RSS_LINE = re.compile(r"peak RSS (\d+) MiB, compute (.*) peak RSS (\d+) MiB")


class PeakRss:
    """Polls the resident memory of a process tree (every 50 ms) and keeps each process's peak, MiB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peaks, self._stop = pid, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                for process in [root, *root.children(recursive=True)]:
                    try:
                        rss = process.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.peaks[process.pid] = max(self.peaks.get(process.pid, 0.0), rss)
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def timed(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, dict[int, float], str]:
    """Run ``command``; its wall time, the peak RSS of each process of its tree, and its stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    poller = PeakRss(process.pid)
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    peaks = poller.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return seconds, peaks, stderr


def plink2_command(plink2: str, study, model: str, out: Path) -> list[str]:
    glm = ["--glm", "omit-ref", "hide-covar"] + (["firth-fallback"] if model == "logistic" else [])
    return [plink2, "--bfile", str(study.pooled_bfile), "--pheno", str(study.pheno_path), "--pheno-name",
            PHENOTYPE[model], "--covar", str(study.covar_path), "--covar-name", *COVARIATES,
            "--covar-variance-standardize", *glm, "--threads", "2", "--out", str(out / f"plink2-{model}")]


def env_with_root() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def coordinator_command() -> list[str]:
    """``fedgwas`` in a process that prints its own peak RSS (KiB) on stderr when it ends."""
    code = ("import resource, sys; from fedgwas.cli import main; code = main(sys.argv[1:]); "
            "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(code)")
    return [sys.executable, "-c", code]


def coordinator_peak_mib(stderr: str) -> float:
    found = re.findall(r"PEAK_RSS_KIB (\d+)", stderr)
    return int(found[-1]) / 1024 if found else float("nan")


def site_peaks(out: Path, sites: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per site, the agent's and its compute workers' peak RSS (MiB) from the last task line of its log."""
    peaks = {}
    for name in sites:
        found = _RSS_LINE.findall((out / "sites" / name / "agent.log").read_text())
        if found:
            agent, backend, workers = found[-1]
            peaks[name] = {"agent": float(agent), "workers": float(workers) if "dask" in backend else 0.0}
    return peaks


def study_toml(path: Path, model: str, endpoints, out: Path, tls_dir: Path) -> None:
    sites = "".join(f'[[sites]]\nname = "{e.name}"\naddress = "{e.address}"\n\n' for e in endpoints)
    path.write_text(
        f'[study]\nid = "scaling-{model}"\n[analysis]\nglm = "{model}"\nphenotype = "{PHENOTYPE[model]}"\n'
        f'covariates = {json.dumps(list(COVARIATES))}\n[network]\ntimeout_seconds = 7200\n'
        f'[output]\ndir = "{out}"\n[tls]\nca = "{tls_dir / "ca.pem"}"\ncert = "{tls_dir / "fedgwas-local.pem"}"\n'
        f'key = "{tls_dir / "fedgwas-local.key"}"\n\n{sites}')


def local_command(study, model: str, out: Path, compute: list[str]) -> list[str]:
    return [*coordinator_command(), "local", *[a for b in study.site_bfiles for a in ("--bfile", str(b))],
            "--pheno", str(study.pheno_path), "--pheno-name", PHENOTYPE[model], "--covar", str(study.covar_path),
            "--covar-name", ",".join(COVARIATES), "--glm", model, "--out", str(out), "--no-progress", *compute]


@contextmanager
def external_dask(workers: int) -> Iterator[str]:
    """A ``dask scheduler`` and a ``dask worker`` (``workers`` processes, 1 thread each) on loopback."""
    directory = Path(tempfile.mkdtemp(prefix="fedgwas-dask-"))
    scheduler_file = directory / "scheduler.json"
    env = env_with_root()
    dask = shutil.which("dask") or "dask"
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(scheduler_file)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                   "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env)
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def measure_size(plink2: str, samples: int, variants: int, models: Sequence[str], compute: list[str],
                 workers: int | None, scheduler: str | None, runs: Path, seed: int, cold: bool = True) -> list[dict]:
    from fedgwas.local import LOCAL_COORDINATOR, local_pki, prepare_sites, running_sites, site_names

    study = simulate(samples, variants, 3, seed)
    rows = []
    base = runs / f"{samples}x{variants}"
    warm_dir = base / "warm"
    names = site_names(list(study.site_bfiles))
    pki = local_pki(warm_dir, names)
    sites = prepare_sites([("plink1", b) for b in study.site_bfiles], study.pheno_path, study.covar_path, warm_dir,
                          allow_plaintext=False, tls=pki, workers=workers, scheduler=scheduler)
    assert LOCAL_COORDINATOR == "fedgwas-local"
    with running_sites(sites, start_timeout=600) as endpoints:
        for model in models:
            row = {"samples": samples, "variants": variants, "model": model}
            seconds, peaks, _ = timed(plink2_command(plink2, study, model, base), dict(os.environ, OPENBLAS_NUM_THREADS="1"))
            row["plink2_seconds"], row["plink2_peak_rss_mib"] = seconds, max(peaks.values())
            out = warm_dir / f"out-{model}"
            study_path = warm_dir / f"study-{model}.toml"
            study_toml(study_path, model, endpoints, out, warm_dir / "tls")
            seconds, _, stderr = timed([*coordinator_command(), "run", str(study_path), "--no-progress"], env_with_root())
            row["warm_seconds"], row["coordinator_peak_rss_mib"] = seconds, coordinator_peak_mib(stderr)
            row["site_peak_rss_mib"] = site_peaks(warm_dir, names)
            summary = json.loads((out / f"{PHENOTYPE[model]}.{model}.summary.json").read_text())
            row["bytes_per_site"] = {site["name"]: site["bytes_sent"] for site in summary["sites"]}
            row["warm_phase_seconds"] = summary["phase_seconds"]
            row["load_average"] = os.getloadavg()
            print(f"{samples}x{variants} {model}: plink2 {row['plink2_seconds']:.1f} s, warm run "
                  f"{row['warm_seconds']:.1f} s", flush=True)
            rows.append(row)
    for row in rows if cold else []:
        cold_out = base / f"cold-{row['model']}"
        seconds, _, stderr = timed(local_command(study, row["model"], cold_out, compute), env_with_root())
        row["cold_seconds"] = seconds
        row["cold_site_peak_rss_mib"] = site_peaks(cold_out, names)
        print(f"{samples}x{variants} {row['model']}: cold local {seconds:.1f} s", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| N × M | model | plink2 | fedgwas run (warm) | warm / plink2 | fedgwas local (cold) | "
             "bytes per site | peak RSS agent (max) | peak RSS worker (max) | coordinator | plink2 RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agents = max(p["agent"] for p in r["site_peak_rss_mib"].values())
        workers = max(p["workers"] for p in r["site_peak_rss_mib"].values())
        sent = max(r["bytes_per_site"].values())
        lines.append(f"| {r['samples']:,} × {r['variants']:,} | {r['model']} | {r['plink2_seconds']:.1f} s | "
                     f"{r['warm_seconds']:.1f} s | {r['warm_seconds'] / r['plink2_seconds']:.2f} | "
                     f"{_seconds(r.get('cold_seconds'))} | {sent / 1e6:.1f} MB | {agents:.0f} MiB | "
                     f"{workers:.0f} MiB | {r['coordinator_peak_rss_mib']:.0f} MiB | {r['plink2_peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "not run" if value is None else f"{value:.1f} s"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, marker in (("linear", "o"), ("logistic", "s")):
        chosen = sorted((r for r in rows if r["model"] == model), key=lambda r: r["samples"] * r["variants"])
        if not chosen:
            continue
        size = [r["samples"] * r["variants"] / 1e9 for r in chosen]
        for key, label in (("plink2_seconds", "plink2 --glm"), ("warm_seconds", "fedgwas run (warm)"),
                           ("cold_seconds", "fedgwas local (cold)")):
            timed_rows = [(x, r[key]) for x, r in zip(size, chosen) if key in r]
            time_axis.plot([x for x, _ in timed_rows], [t for _, t in timed_rows], marker=marker,
                           label=f"{model}: {label}")
        memory_axis.plot(size, [max(p["agent"] for p in r["site_peak_rss_mib"].values()) for r in chosen],
                         marker=marker, label=f"{model}: agent")
        memory_axis.plot(size, [max(p["workers"] for p in r["site_peak_rss_mib"].values()) for r in chosen],
                         marker=marker, linestyle=":", label=f"{model}: compute worker")
        memory_axis.plot(size, [r["plink2_peak_rss_mib"] for r in chosen], marker=marker, linestyle="--",
                         label=f"{model}: plink2")
    time_axis.set(xlabel="samples × variants (10⁹ genotypes)", ylabel="wall time (s)", title="time",
                  xscale="log", yscale="log")
    memory_axis.set_xscale("log")
    memory_axis.set(xlabel="samples × variants (10⁹ genotypes)", ylabel="peak RSS (MiB)", title="memory per process")
    for axis in (time_axis, memory_axis):
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000x25000,30000x25000,10000x100000",
                        help="comma-separated NxM (samples x variants)")
    parser.add_argument("--models", default="linear,logistic")
    parser.add_argument("--site-workers", type=int, default=0,
                        help="each agent's local Dask cluster (0: compute in the agent process)")
    parser.add_argument("--dask-external", type=int, default=0, metavar="WORKERS",
                        help="attach every agent to a separate dask scheduler with this many worker processes")
    parser.add_argument("--skip-cold", action="store_true", help="time warm runs and PLINK 2 only (large sizes)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--plot", help="write the time/memory plot here (PNG)")
    parser.add_argument("--report", nargs="+", metavar="RESULT_JSON",
                        help="run nothing: print the table (and --plot) of saved result.json files, combined")
    args = parser.parse_args()
    if args.report:
        rows = [row for path in args.report for row in json.loads(Path(path).read_text())["rows"]]
        print(markdown(rows))
        if args.plot:
            plot(rows, Path(args.plot))
        return

    plink2 = ensure_plink2_with_openblas()
    runs = ROOT / "benchmarks" / "runs" / time.strftime("scaling-%Y%m%d-%H%M%S")
    runs.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    models = args.models.split(",")
    rows: list[dict] = []
    with (external_dask(args.dask_external) if args.dask_external else _nothing()) as scheduler:
        compute = (["--dask-scheduler", scheduler] if scheduler else
                   ["--site-workers", str(args.site_workers)] if args.site_workers else [])
        for samples, variants in sizes:
            rows += measure_size(plink2, samples, variants, models, compute, args.site_workers or None, scheduler,
                                 runs, args.seed, cold=not args.skip_cold)
            (runs / "result.json").write_text(json.dumps({
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_average": os.getloadavg()},
                "compute": {"site_workers": args.site_workers, "dask_external_workers": args.dask_external},
                "rows": rows}, indent=2))
    print(markdown(rows))
    if args.plot:
        plot(rows, Path(args.plot))
    print(f"results: {runs / 'result.json'}")


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
