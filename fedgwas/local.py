"""``fedgwas local``: one real site-agent process per genotype fileset, on loopback.

Each site gets a directory ``OUT/sites/<bfile stem>/`` holding its config, its identity key (kept
across runs, so a site's identity is stable) and a copy of the consortium roster ``OUT/roster.toml``
listing every local site, its own rows of the phenotype and covariate files (a site
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
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from coordinator.client import SiteEndpoint
from engine.errors import InputError, StudyFailed
from engine.io.genotype_sources import sample_ids
from engine.io.hard_calls import HardCallRules
from engine.io.plink import FamTable, bfile_paths
from engine.io.tables import SampleTable, read_sample_table
from engine.privacy.budget import BudgetPolicy
from protos.pki import TlsFiles, dev_pki
from site_agent.compute.settings import check_scheduler_address
from site_agent.provision import init_site, provision_roster

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalSite:
    name: str
    directory: Path
    config: Path


#: The coordinator's certificate name in local runs (the requester every local site sees) and the key holder's.
LOCAL_COORDINATOR, LOCAL_KEY_HOLDER = "fedgwas-local", "keyholder"


def local_pki(out_dir: Path, site_names_: Sequence[str]) -> dict[str, TlsFiles]:
    """A development CA in ``OUT/tls/`` (created once, then reused) with certificates for every local
    site, the coordinator (:data:`LOCAL_COORDINATOR`) and the key holder."""
    return dev_pki(out_dir / "tls", [*site_names_, LOCAL_COORDINATOR, LOCAL_KEY_HOLDER])


class SiteInput(NamedTuple):
    """Genotype inputs of one local site: format (as in engine.io.genotype_sources.FORMATS) and path;
    a BGEN's ``.sample`` file and a VCF's dosage field (``DS``/``GP``) where given, and the hard-call
    rules of a dosage import (``--hard-call-threshold``/``--dosage-erase-threshold``)."""

    fmt: str
    path: Path
    sample: Path | None = None
    vcf_dosage: str | None = None
    hard_calls: HardCallRules = HardCallRules()


def site_names(paths: Sequence[Path]) -> list[str]:
    """Site names from file stems (``cohort`` for cohort.bed, cohort.pgen or cohort.vcf.gz), made
    unique with a numeric suffix when stems repeat."""
    names: list[str] = []
    for prefix in paths:
        stem = Path(prefix).name
        for suffix in (".bed", ".bim", ".fam", ".pgen", ".pvar", ".psam", ".bcf", ".gz", ".vcf", ".bgen"):
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
        keys = np.char.add(np.char.add(table.fid, "\t"), table.iid)
        keep = np.isin(keys, np.char.add(np.char.add(fam.fid, "\t"), fam.iid))
    return table.keep_rows(keep)


#: Column of the placeholder phenotype file of a QC-only run (a site's config needs a phenotype file).
NO_PHENOTYPE = "NO_PHENOTYPE"


def _placeholder_pheno(fam: FamTable, iid_only: bool) -> SampleTable:
    """The site's samples with one all-missing column, for runs that use no phenotype (QC only)."""
    return SampleTable(path=Path("pheno.txt"), fid=None if iid_only else fam.fid, iid=fam.iid,
                       columns={NO_PHENOTYPE: np.full(len(fam.iid), "NA")})


def prepare_sites(inputs: Sequence[SiteInput], pheno: Path | None, covar: Path | None, out_dir: Path,
                  allow_plaintext: bool, threads: int | None = None,
                  he_context_sha256: str | None = None, budget: BudgetPolicy | None = None,
                  tls: dict[str, TlsFiles] | None = None, consent: Path | None = None,
                  witness: str | None = None, genotyping_technology: str | None = None,
                  workers: int | None = None, scheduler: str | None = None) -> list[LocalSite]:
    """Create (or refresh) each site's directory, config and data subset; keys are kept if present.

    ``he_context_sha256`` pins the local key holder's public context in every site's config (mode "he").

    Without ``pheno`` (a QC-only run) each site gets a placeholder phenotype file with no values.

    ``budget`` is every site's DP budget (written to its config on every run); what each site has
    spent stays in its ledger, ``OUT/sites/<name>/ledger.sqlite``, so budgets accumulate across runs.

    ``tls`` maps each site name to its certificate (:func:`local_pki`); None configures plaintext
    agents (``[tls] insecure = true``). ``consent`` is a ``#FID IID DUO`` table: each site receives its
    own rows only (participants it does not list are excluded by the site). ``witness`` is the address
    of a ledger-head witness every site publishes to (``[witness] address``).

    ``workers`` (>= 1) gives every site its own local Dask cluster of that many worker processes;
    ``scheduler`` points every site at one running Dask cluster; neither: each agent computes in its
    own process (site_agent/compute/).
    """
    if workers is not None and workers < 0:
        raise InputError(f"--site-workers must be >= 0, got {workers}")
    if scheduler is not None:
        check_scheduler_address(scheduler, "--dask-scheduler")
    if len(inputs) < 2:
        raise InputError(f"a federated study needs at least two sites (--bfile/--pfile/--vcf), got {len(inputs)}")
    pheno_table = None if pheno is None else read_sample_table(pheno)
    covar_table = None if covar is None else read_sample_table(covar)
    consent_table = None if consent is None else read_sample_table(consent)
    names = site_names([site_input[1] for site_input in inputs])
    # OUT/roster.toml: every local site's identity key (kept across runs) and certificate; every site pins it
    roster = provision_roster({name: out_dir / "sites" / name for name in names}, out_dir / "roster.toml", tls)
    sites = []
    for name, site_input in zip(names, inputs):
        fmt, path, sample, vcf_dosage, hard_calls = SiteInput(*site_input)
        directory = out_dir / "sites" / name
        directory.mkdir(parents=True, exist_ok=True)
        fam = sample_ids(fmt, Path(path), sample)
        iid_only = fmt == "vcf" or (fmt == "bgen" and sample is None)  # no family IDs in the file
        site_pheno = _placeholder_pheno(fam, iid_only) if pheno_table is None else \
            _rows_for_site(pheno_table, fam, iid_only)
        site_pheno.write(directory / "pheno.txt")
        covar_path = None
        if covar_table is not None:
            covar_path = directory / "covar.txt"
            _rows_for_site(covar_table, fam, iid_only).write(covar_path)
        consent_path = None
        if consent_table is not None:
            consent_path = directory / "consent.txt"
            _rows_for_site(consent_table, fam, iid_only).write(consent_path)
        genotypes = bfile_paths(path)[0].with_suffix("") if fmt == "plink1" else Path(path)
        config = init_site(name, str(genotypes), str(directory / "pheno.txt"),
                           None if covar_path is None else str(covar_path), directory, "127.0.0.1:0",
                           allow_plaintext=allow_plaintext, threads=threads, genotype_format=fmt,
                           he_context_sha256=he_context_sha256, budget=budget,
                           tls=None if tls is None else tls[name],
                           consent=None if consent_path is None else str(consent_path), witness=witness,
                           roster=roster, genotyping_technology=genotyping_technology,
                           workers=workers or None, scheduler=scheduler,
                           sample=None if sample is None else str(sample), vcf_dosage=vcf_dosage,
                           hard_calls=hard_calls)
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
            _stop(process, ready)


@dataclass(frozen=True)
class LocalKeyHolder:
    """The key holder of a local ``--privacy he`` run: its directory (keys, log) and context fingerprint."""

    directory: Path
    fingerprint: str


def prepare_key_holder(out_dir: Path) -> LocalKeyHolder:
    """Keys in ``OUT/keyholder/`` (generated on the first run, then kept, like the sites' keys).

    The keys are generated by a separate ``fedgwas keys he`` process, and only the key-holder process
    reads ``he_secret.ctx``: this (the aggregator's) process never has the secret key, not even
    briefly. It reads the public file only, to pin its fingerprint in the sites' configs.
    """
    from engine.privacy.he_rounds import PUBLIC_FILE
    from engine.privacy.he import context_fingerprint

    directory = out_dir / "keyholder"
    public = directory / PUBLIC_FILE
    if not public.exists():
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        completed = subprocess.run([sys.executable, "-m", "fedgwas", "keys", "he", "--out", str(directory)],
                                   capture_output=True, text=True, env=env)
        if completed.returncode != 0:
            lines = (completed.stderr or completed.stdout).strip().splitlines()
            raise StudyFailed(f"generating the key holder's keys failed: {lines[-1] if lines else completed.returncode}")
    return LocalKeyHolder(directory, context_fingerprint(public.read_bytes()))


class KeyHolderProcess:
    """A started ``fedgwas keyholder serve`` process; :meth:`address` waits until it serves."""

    def __init__(self, holder: LocalKeyHolder, process: subprocess.Popen, ready: Path, start_timeout: float) -> None:
        self.holder, self.process, self.ready = holder, process, ready
        self.deadline = time.monotonic() + start_timeout

    def address(self) -> str:
        log_path = self.holder.directory / "keyholder.log"
        while not self.ready.exists():
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()
                last = tail[-1] if tail else "(no output)"
                if self.process.returncode == 2:
                    raise InputError(f"key holder: {last.removeprefix('fedgwas: error: ')}")
                raise StudyFailed(f"the key holder exited with code {self.process.returncode}: " + " | ".join(tail[-3:]))
            if time.monotonic() > self.deadline:
                raise StudyFailed("the key holder did not start in time")
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        if info.get("sha256") != self.holder.fingerprint:
            raise StudyFailed("the key holder serves a different context than the one the sites pinned")
        return str(info["address"])


@contextmanager
def running_key_holder(holder: LocalKeyHolder | None, start_timeout: float = 120.0,
                       tls_dir: Path | None = None) -> Iterator[KeyHolderProcess | None]:
    """Start the key holder as its own process (``None``: no key holder, yields ``None``); stop it on exit.

    ``tls_dir`` holds its certificate (:func:`local_pki`); None serves plaintext (``--insecure``).
    """
    if holder is None:
        yield None
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    ready = holder.directory / "ready.json"
    ready.unlink(missing_ok=True)
    command = [sys.executable, "-m", "fedgwas", "keyholder", "serve", "--keys", str(holder.directory),
               "--listen", "127.0.0.1:0", "--ready-file", str(ready),
               *(["--insecure"] if tls_dir is None else ["--tls-dir", str(tls_dir), "--tls-name", LOCAL_KEY_HOLDER,
                                                      "--coordinator", LOCAL_COORDINATOR])]
    with open(holder.directory / "keyholder.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield KeyHolderProcess(holder, process, ready, start_timeout)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _stop(process, ready)


def _stop(process: subprocess.Popen, ready: Path) -> None:
    """Wait up to 10 s for a process sent SIGTERM, kill it after that, and remove its ready file."""
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    ready.unlink(missing_ok=True)
