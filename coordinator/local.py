"""``fedgwas local``: one real site-agent process per genotype fileset, on loopback.

Each site gets a directory ``OUT/sites/<bfile stem>/`` holding its config, its key pair (kept across
runs, so a site's identity is stable), its own rows of the phenotype and covariate files (a site
never sees another site's samples), and its log. Agents bind port 0 and report their address in a
ready file; they are stopped when the study ends, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from coordinator.client import SiteEndpoint
from engine.errors import InputError, StudyFailed
from engine.genotype_sources import sample_ids
from engine.plink_io import FamTable, bfile_paths
from engine.tables import SampleTable, read_sample_table
from site_agent.provision import init_site

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalSite:
    name: str
    directory: Path
    config: Path


#: Genotype inputs of one local site: (format, path), format as in engine.genotype_sources.FORMATS.
SiteInput = tuple[str, Path]


def site_names(paths: Sequence[Path]) -> list[str]:
    """Site names from file stems (``cohort`` for cohort.bed, cohort.pgen or cohort.vcf.gz), made
    unique with a numeric suffix when stems repeat."""
    names: list[str] = []
    for prefix in paths:
        stem = Path(prefix).name
        for suffix in (".bed", ".bim", ".fam", ".pgen", ".pvar", ".psam", ".bcf", ".gz", ".vcf"):
            stem = stem.removesuffix(suffix)
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def _rows_for_site(table: SampleTable, fam: FamTable, iid_only: bool = False) -> SampleTable:
    """The rows of ``table`` for the samples of ``fam``; keyed by IID alone when ``iid_only`` (VCF
    samples have no family IDs), in which case the written table has no FID column."""
    if iid_only:
        rows = table.keep_rows(np.isin(table.iid, fam.iid))
        return SampleTable(path=rows.path, fid=None, iid=rows.iid, columns=rows.columns)
    if table.fid is None:
        keep = np.isin(table.iid, fam.iid)
    else:
        keys = np.char.add(np.char.add(table.fid, "\x00"), table.iid)
        keep = np.isin(keys, np.char.add(np.char.add(fam.fid, "\x00"), fam.iid))
    return table.keep_rows(keep)


def prepare_sites(inputs: Sequence[SiteInput], pheno: Path, covar: Path | None, out_dir: Path,
                  allow_plaintext: bool, threads: int | None = None) -> list[LocalSite]:
    """Create (or refresh) each site's directory, config and data subset; keys are kept if present."""
    if len(inputs) < 2:
        raise InputError(f"a federated study needs at least two sites (--bfile/--pfile/--vcf), got {len(inputs)}")
    pheno_table = read_sample_table(pheno)
    covar_table = None if covar is None else read_sample_table(covar)
    sites = []
    for name, (fmt, path) in zip(site_names([p for _, p in inputs]), inputs):
        directory = out_dir / "sites" / name
        directory.mkdir(parents=True, exist_ok=True)
        fam = sample_ids(fmt, Path(path))
        iid_only = fmt == "vcf"
        _rows_for_site(pheno_table, fam, iid_only).write(directory / "pheno.txt")
        covar_path = None
        if covar_table is not None:
            covar_path = directory / "covar.txt"
            _rows_for_site(covar_table, fam, iid_only).write(covar_path)
        genotypes = bfile_paths(path)[0].with_suffix("") if fmt == "plink1" else Path(path)
        config = init_site(name, str(genotypes), str(directory / "pheno.txt"),
                           None if covar_path is None else str(covar_path), directory, "127.0.0.1:0",
                           allow_plaintext=allow_plaintext, threads=threads, genotype_format=fmt)
        sites.append(LocalSite(name=name, directory=directory, config=config))
    return sites


@contextmanager
def running_sites(sites: Sequence[LocalSite], start_timeout: float = 120.0) -> Iterator[list[SiteEndpoint]]:
    """Start one ``fedgwas-site serve`` process per site; stop them all on exit.

    Yields the endpoints as soon as every agent has written its ready file.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    threads = str(max(1, (os.cpu_count() or 1) // max(1, len(sites))))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    processes: list[tuple[LocalSite, subprocess.Popen, Path]] = []
    try:
        for site in sites:
            ready = site.directory / "ready.json"
            ready.unlink(missing_ok=True)
            log = open(site.directory / "agent.log", "ab")
            command = [sys.executable, "-m", "site_agent", "serve", "--config", str(site.config),
                       "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
            processes.append((site, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), ready))
            log.close()
        endpoints = []
        deadline = time.monotonic() + start_timeout
        for site, process, ready in processes:
            while not ready.exists():
                if process.poll() is not None:
                    tail = (site.directory / "agent.log").read_text(errors="replace").strip().splitlines()
                    last = tail[-1] if tail else "(no output)"
                    if process.returncode == 2:  # the agent refused its configuration or data
                        raise InputError(f"site {site.name!r}: {last.removeprefix('fedgwas-site: error: ')}")
                    raise StudyFailed(f"site {site.name!r} agent exited with code {process.returncode}: "
                                      + " | ".join(tail[-3:]))
                if time.monotonic() > deadline:
                    raise StudyFailed(f"site {site.name!r} agent did not start within {start_timeout:.0f} s")
                time.sleep(0.05)
            endpoints.append(SiteEndpoint(site.name, json.loads(ready.read_text())["address"]))
        yield endpoints
    finally:
        for _, process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, ready in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            ready.unlink(missing_ok=True)
