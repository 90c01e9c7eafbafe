"""Where a site agent computes its blocks: in its own process or on a Dask cluster (``[compute]``).

* :mod:`.settings` -- the ``[compute]`` keys of site.toml;
* :mod:`.jobs` -- one block of one task, and the computation every backend runs;
* :mod:`.backend` -- the backend interface and the in-process backend;
* :mod:`.dask_backend` -- the Dask backend (a local cluster or the site's running one);
* :mod:`.store` -- the spill store: a cohort's genotypes on site-local disk for multi-round analyses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package is imported by site_agent.config: keep its import light
    from site_agent.compute.backend import ComputeBackend
    from site_agent.compute.settings import ComputeSettings


def make_backend(settings: ComputeSettings) -> ComputeBackend:
    """The backend ``settings`` ask for (a Dask backend starts or connects to its cluster here)."""
    if settings.backend == "inline":
        from site_agent.compute.backend import InlineBackend

        return InlineBackend(settings.parallel_blocks)
    from site_agent.compute.dask_backend import DaskBackend  # imports distributed: only sites that use it

    return DaskBackend(settings)
