"""A site's data, loaded and validated once when the agent starts.

Genotypes stay on disk and are read in blocks per task; the .bim/.fam and the phenotype and
covariate tables are parsed here once. Cohorts (analysed samples for a phenotype/covariate set) are
cached because every round of a study asks for the same one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from engine import secagg
from engine.cohort import Cohort, build_cohort
from engine.errors import ConfigError
from engine.genotype_sources import GenotypeSource, open_genotypes
from engine.tables import SampleTable, read_sample_table
from engine.tasks import CohortRequest
from site_agent.config import SiteConfig
from site_agent.ledger import Ledger, verify


@dataclass
class SiteData:
    config: SiteConfig
    genotypes: GenotypeSource
    pheno: SampleTable
    covar: SampleTable | None
    secagg_key: X25519PrivateKey
    ledger: Ledger  # every task is recorded here (site_agent/ledger.py)

    def __post_init__(self) -> None:
        self._cohorts: dict[CohortRequest, Cohort] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def secagg_public_key(self) -> bytes:
        return secagg.public_key_bytes(self.secagg_key)

    def cohort(self, request: CohortRequest) -> Cohort:
        """Analysed samples for ``request`` (raises InputError for unknown names/non-numeric values)."""
        with self._lock:
            if request not in self._cohorts:
                self._cohorts[request] = build_cohort(
                    self.genotypes.fam, self.pheno, request.phenotype, self.covar, request.covariates,
                    request.phenotype_coding,
                )
            return self._cohorts[request]


def load_site_data(config: SiteConfig) -> SiteData:
    """Open and validate everything the config points to (raises InputError naming the file).

    The ledger's hash chain is verified first: a site whose ledger was tampered with refuses to start,
    since its record of spent privacy budget can no longer be trusted.
    """
    assert config.ledger is not None  # load_site_config always sets it
    ledger = Ledger(config.ledger, config.name, config.dataset)
    check = verify(ledger.entries())
    if not check.ok:
        raise ConfigError(f"ledger {str(config.ledger)!r} failed verification: {check.problem}; investigate with "
                          f"`fedgwas-site audit verify {config.ledger}` before serving")
    return SiteData(
        config=config,
        genotypes=open_genotypes(config.genotype_format, config.genotypes, config.path.parent / "cache",
                                 num_threads=config.threads),
        pheno=read_sample_table(config.pheno),
        covar=None if config.covar is None else read_sample_table(config.covar),
        secagg_key=secagg.load_private_key(config.secagg_private_key),
        ledger=ledger,
    )
