"""Benchmark: importing a site's VCF (fedgwas's one-off import into a cached PLINK 1 fileset) vs
``plink2 --vcf ... --make-pgen`` on the same file, in one run.

The VCF is made from the first simulated site of the linear benchmark data (default 3,334 samples
x 100,000 variants) with ``plink2 --export vcf bgz``. Usage::

    python benchmarks/vcf_ingestion.py [--variants 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.io.genotype_sources import import_vcf  # noqa: E402
from linear_vs_plink2 import ensure_plink2_with_openblas, simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="samples of the simulated study (3 sites)")
    parser.add_argument("--variants", type=int, default=100_000)
    args = parser.parse_args()
    plink2 = ensure_plink2_with_openblas()
    study = simulate(args.samples, args.variants, 3, 2026)
    site = study.site_bfiles[0]
    vcf = Path(f"{site}.vcf.gz")
    if not vcf.exists():
        subprocess.run([plink2, "--bfile", str(site), "--export", "vcf", "bgz", "id-paste=iid", "--threads", "2",
                        "--out", str(site)], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([plink2, "--vcf", str(vcf), "--make-pgen", "--threads", "2", "--out", f"{tmp}/plink2"],
                       check=True, capture_output=True)
        plink_seconds = time.perf_counter() - started
        started = time.perf_counter()
        imported = import_vcf(vcf, Path(tmp) / "cache")
        ours = time.perf_counter() - started
        shutil.rmtree(Path(tmp) / "cache")
    result = {"vcf": str(vcf), "vcf_bytes": vcf.stat().st_size, "variants": imported.n_variants,
              "plink2_vcf_to_pgen_seconds": plink_seconds, "fedgwas_import_seconds": ours,
              "ratio": ours / plink_seconds}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
