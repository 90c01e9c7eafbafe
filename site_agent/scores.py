"""PCA sample scores a site keeps: written by the site itself, used as its covariates PC1..PCk.

At the end of a federated PCA (:mod:`engine.stats.pca.kernel`) the last round's first-pass product is the site's
own rows of the sample eigenvectors. They never leave the site: when the task carries
``engine.stats.pca.kernel.SCORES_PARAMETER`` the site writes them next to its config, as ``pca.eigenvec`` in
PLINK 2's ``.eigenvec`` layout (``#FID IID PC1 .. PCk``), with ``pca.eigenvec.json`` recording which
PCA run (study, run identifier, components) produced them. A later association task that carries
``cohort.pca_run`` (``CohortSpec.pca_run``) with the same run identifier takes its covariates named
``PC1..PCk`` from that file (other covariates still come from the site's covariate file); a run the
site does not hold is refused, so stale scores are never used silently.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from engine.cohort.cohort import Cohort
from engine.errors import InputError, ProtocolError
from engine.stats.pca.kernel import SCORES_PARAMETER
from engine.io.tables import SampleTable, read_sample_table
from engine.tasks import TaskSpec
from site_agent.data import SiteData

SCORES_FILE = "pca.eigenvec"
META_FILE = "pca.eigenvec.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _run_id(task: TaskSpec, key: str) -> str:
    run = task.parameters[key]
    if not _RUN_ID.match(run):
        raise ProtocolError(f"task.parameters[{key!r}] {run!r} is not a PCA run identifier")
    return run


def scores_path(data: SiteData) -> Path:
    """Where the site keeps its scores: next to its config file."""
    return data.config.path.parent / SCORES_FILE


def keep(data: SiteData, task: TaskSpec, cohort: Cohort, values: np.ndarray) -> Path:
    """Write the site's sample scores ``values`` ``(n, k)`` (rows of ``cohort``) for the task's PCA run.

    Written to temporary files and renamed, so a reader never sees half a file.
    """
    run = _run_id(task, SCORES_PARAMETER)
    fam = data.genotypes.fam
    rows = cohort.sample_index
    names = [f"PC{i + 1}" for i in range(values.shape[1])]
    lines = ["#FID\tIID\t" + "\t".join(names)]
    lines += ["\t".join([str(fid), str(iid), *(f"{x:.10g}" for x in row)])
              for fid, iid, row in zip(fam.fid[rows], fam.iid[rows], values)]
    path = scores_path(data)
    meta = {"study": task.study_id, "run": run, "round": task.round, "components": values.shape[1],
            "samples": int(len(rows))}
    for target, text in ((path, "\n".join(lines) + "\n"), (path.with_name(META_FILE), json.dumps(meta, indent=2))):
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    return path


def load(data: SiteData, run: str) -> SampleTable:
    """The site's scores of PCA run ``run`` as a covariate table (columns ``PC1..PCk``).

    Raises
    ------
    InputError
        If the site holds no scores, or scores of another run.
    """
    path = scores_path(data)
    try:
        meta = json.loads(path.with_name(META_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        raise InputError(f"site {data.name!r} holds no PCA scores (run {run!r}): run the PCA first") from None
    if meta.get("run") != run:
        raise InputError(f"site {data.name!r} holds the PCA scores of run {meta.get('run')!r} "
                         f"(study {meta.get('study')!r}), not of run {run!r}")
    return read_sample_table(path)


def task_cohort(data: SiteData, task: TaskSpec) -> Cohort:
    """The task's cohort; with ``cohort.pca_run``, covariates named like a score column (``PC1``..)
    come from the site's PCA scores of that run. Participants the site left out of the study as shared
    with another site (:meth:`SiteData.exclude_shared`) are not in it."""
    if not task.cohort.pca_run:
        return data.cohort(task.cohort, study_id=task.study_id)
    return data.cohort(task.cohort, extra=load(data, task.cohort.pca_run), extra_key=task.cohort.pca_run,
                       study_id=task.study_id)
