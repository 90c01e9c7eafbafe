"""Benchmark: many phenotypes in one genotype pass, on imputed dosages (``.pgen`` with dosages, 3 sites).

The same ``fedgwas local --glm linear`` run (secure aggregation, 5 covariates) with 1 phenotype and with
10 phenotypes of different missingness (``--pheno-name Y1-Y10``), on 10,000 samples x 100,000 variants by
default. Reported: the wall time of each run, the CPU time of all its processes (the coordinator and the
three site agents: the cost on a shared machine, where wall times follow the other jobs' load), its
``rounds and solve`` phase (the sites' genotype pass,
masking, transfer, aggregation and solve) and its ``write`` phase (one GWAS-SSF file, two plots and a
report per phenotype), and the bytes each site sent. Usage::

    python benchmarks/phenotypes_one_pass.py [--samples 10000] [--variants 100000] [--repeats 2]

The data: :mod:`engine.simulate`'s hard calls for 3 sites (cached under benchmarks/data/), turned into
dosages with imputation uncertainty (each call moved towards the population mean by a per-variant
quality, a fresh draw per sample; a missing call imputed as the mean, as imputed data have no gaps)
and written as a ``.pgen`` with dosages per site. Results are printed
as a Markdown table and written to benchmarks/runs/<timestamp>-phenotypes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.io.dosage import DosageVariant, write_dosage_fileset  # noqa: E402
from engine.io.plink import BedFile  # noqa: E402
from engine.simulate import SimulationSpec, simulate_study  # noqa: E402
from engine.io.tables import read_sample_table  # noqa: E402

COVARIATES = ("SEX_MALE", "AGE", "BMI", "SMOKER", "ANC1")
N_PHENOTYPES = 10


def dosage_sites(samples: int, variants: int, seed: int = 2026) -> tuple[list[Path], Path, Path]:
    """(site .pgen prefixes, phenotype file, covariate file), simulated once and cached."""
    out = ROOT / "benchmarks" / "data" / f"imputed_{samples}x{variants}_seed{seed}"
    sizes = tuple(samples // 3 + (1 if i < samples % 3 else 0) for i in range(3))
    spec = SimulationSpec(site_sizes=sizes, n_variants=variants, seed=seed, write_pooled=False)
    marker = out / "dosage.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return [Path(p) for p in info["sites"]], Path(info["pheno"]), Path(info["covar"])
    study = simulate_study(spec, out / "hardcalls")
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.4, 1.0, size=variants)
    prefixes = []
    for k, bfile in enumerate(study.site_bfiles):
        bed = BedFile(bfile)
        manifest = bed.manifest
        freq = np.empty(variants)

        def blocks():  # one block of variants at a time: dosages (n,) per variant, NaN missing
            for start in range(0, variants, 4096):
                calls = bed.read_block(np.arange(start, min(start + 4096, variants))).astype(np.float64)
                calls[calls < 0] = np.nan
                mean = np.nanmean(calls, axis=0)
                freq[start:start + calls.shape[1]] = mean / 2
                q = quality[start:start + calls.shape[1]]
                pull = rng.beta(8 * q + 0.5, 8 * (1 - q) + 0.5, size=calls.shape)
                dosages = np.round((pull * calls + (1 - pull) * mean) * 16384) / 16384
                dosages = np.where(np.isnan(dosages), np.round(mean * 16384) / 16384, dosages)  # imputed: no gaps
                yield from dosages.T

        variants_list = [DosageVariant(c, int(p), i, a2, a1) for c, p, i, a1, a2 in
                         zip(manifest.chrom, manifest.pos, manifest.variant_id, manifest.allele1, manifest.allele2)]
        prefix = out / f"site{k + 1}"
        write_dosage_fileset(prefix, bed.fam, variants_list, blocks(), bfile, 0)
        prefixes.append(prefix)
    pheno = read_sample_table(study.pheno_path)
    qt = pheno.numeric("QT")
    lines = ["#FID\tIID\t" + "\t".join(f"Y{j + 1}" for j in range(N_PHENOTYPES))]
    columns = []
    for j in range(N_PHENOTYPES):  # QT plus noise, each with its own missingness (0-20 %)
        values = qt + rng.normal(scale=0.5, size=len(qt))
        values[rng.random(len(qt)) < 0.02 * j] = np.nan
        columns.append(values)
    for i in range(len(qt)):
        lines.append(f"{pheno.fid[i] if pheno.fid is not None else pheno.iid[i]}\t{pheno.iid[i]}\t"
                     + "\t".join("NA" if np.isnan(c[i]) else f"{c[i]:.6g}" for c in columns))
    (out / "pheno10.txt").write_text("\n".join(lines) + "\n")
    marker.write_text(json.dumps({"sites": [str(p) for p in prefixes], "pheno": str(out / "pheno10.txt"),
                                  "covar": str(study.covar_path)}))
    return prefixes, out / "pheno10.txt", study.covar_path


def run(sites: list[Path], pheno: Path, covar: Path, names: str, out: Path) -> dict:
    args = [a for s in sites for a in ("--pfile", str(s))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedgwas", "local", *args, "--pheno", str(pheno), "--pheno-name",
                    names, "--covar", str(covar), "--covar-name", ",".join(COVARIATES), "--glm", "linear",
                    "--out", str(out), "--no-progress"], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run and its site agents, once they are waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summaries = sorted(out.glob("*.linear.summary.json"))
    combined = out / "fedgwas.linear.summary.json"
    summary = json.loads((combined if combined.exists() else summaries[0]).read_text())
    return {"wall_seconds": wall, "cpu_seconds": cpu, "phase_seconds": summary["phase_seconds"],
            "bytes_sent": {s["name"]: s["bytes_sent"] for s in summary["sites"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    sites, pheno, covar = dosage_sites(args.samples, args.variants)
    print(f"data ready in {time.perf_counter() - started:.0f} s: {sites}")
    runs: dict[str, list[dict]] = {"1": [], str(N_PHENOTYPES): []}
    scratch = ROOT / "benchmarks" / "data" / "phenotype_runs"
    for repeat in range(args.repeats):
        for label, names in (("1", "Y1"), (str(N_PHENOTYPES), f"Y1-Y{N_PHENOTYPES}")):
            result = run(sites, pheno, covar, names, scratch / f"{label}_{repeat}")
            runs[label].append(result)
            print(label, json.dumps(result))
    print(f"\n{args.samples:,} samples x {args.variants:,} variants, 3 sites, dosages, secagg; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| phenotypes | wall (best) | CPU, every process (best) | rounds and solve (best) | write (best) | bytes sent per site |")
    print("|---|---|---|---|---|---|")
    best = {}
    for label, results in runs.items():
        best[label] = {key: min(r["phase_seconds"].get(key, float("nan")) for r in results)
                       for key in ("rounds and solve", "write")}
        best[label]["wall"] = min(r["wall_seconds"] for r in results)
        best[label]["cpu"] = min(r["cpu_seconds"] for r in results)
        sent = results[0]["bytes_sent"]
        print(f"| {label} | {best[label]['wall']:.1f} s | {best[label]['cpu']:.1f} s | {best[label]['rounds and solve']:.1f} s | "
              f"{best[label]['write']:.1f} s | {min(sent.values()) / 1e6:.0f}-{max(sent.values()) / 1e6:.0f} MB |")
    ratio = {key: best[str(N_PHENOTYPES)][key] / best["1"][key] for key in ("wall", "cpu", "rounds and solve", "write")}
    print(f"\nratio {N_PHENOTYPES} : 1 phenotype: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    record = {"samples": args.samples, "variants": args.variants, "runs": runs, "ratio": ratio,
              "machine": platform.platform(), "load_average": os.getloadavg()}
    runs_dir = ROOT / "benchmarks" / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-phenotypes.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
