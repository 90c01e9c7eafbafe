"""A site's data, loaded and validated once when the agent starts.

Genotypes stay on disk and are read in blocks per task; the .bim/.fam and the phenotype and
covariate tables are parsed here once. Cohorts (analysed samples for a phenotype/covariate set) are
cached because every round of a study asks for the same one.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from engine.privacy import roster as roster_module
from engine.privacy.roster import Roster
from engine.cohort import overlap
from engine.cohort.cohort import Cohort, build_cohort
from engine.cohort.consent import consent_mask, parse_duo
from engine.errors import ConfigError, InputError, PrivacyError
from engine.cohort.sex_chromosomes import X, Y, chromosome_class
from engine.io.genotype_sources import GenotypeSource, has_dosages, open_genotypes
from engine.io.tables import SampleTable, read_sample_table
from engine.tasks import CohortRequest
from site_agent.compute import make_backend
from site_agent.compute.backend import ComputeBackend
from site_agent.compute.jobs import SourceSpec
from site_agent.compute.store import StoreSpec, prepare_store, read_through, source_identity, store_spec
from site_agent.config import SiteConfig
from engine.audit.ledger import Ledger
from site_agent.head_publisher import HeadPublisher, open_checked_ledger


@dataclass
class SiteData:
    config: SiteConfig
    genotypes: GenotypeSource
    pheno: SampleTable
    covar: SampleTable | None
    identity_key: Ed25519PrivateKey  # signs this site's ephemeral keys in every round
    ledger: Ledger  # every task is recorded here (engine/audit/ledger.py)
    consent: SampleTable | None = None  # #FID IID DUO table ([data] consent), validated at load
    heads: HeadPublisher | None = None  # signs the ledger head after every append (site_agent/head_publisher.py)
    roster: Roster | None = None  # the pinned consortium roster ([keys] roster)

    def __post_init__(self) -> None:
        self._cohorts: dict[tuple[CohortRequest, str, frozenset[str]], Cohort] = {}
        self._shared: dict[str, frozenset[str]] = {}  # study -> IIDs left out as shared with another site
        self._lock = threading.Lock()
        self._cache = GenotypeCache(self.config.genotype_cache_mib << 20, spill=self.store_for)
        self._store: StoreSpec | None = None
        self._backend: ComputeBackend | None = None
        self._backend_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    @functools.cached_property
    def on_chromosome_y(self) -> np.ndarray:
        """bool ``(n_variants,)``: the site's chrY variants (association drops non-males' calls there)."""
        return chromosome_class(self.genotypes.manifest.chrom) == Y

    @functools.cached_property
    def on_chromosome_x(self) -> np.ndarray:
        """bool ``(n_variants,)``: the site's non-PAR chrX variants (``--xchr-model 1`` halves males' calls)."""
        return chromosome_class(self.genotypes.manifest.chrom) == X

    @property
    def identity_public_key(self) -> bytes:
        return roster_module.public_bytes(self.identity_key)

    @property
    def overlap_key(self) -> X25519PrivateKey:
        """The X25519 key of the private overlap check, derived from the identity key (no key file)."""
        return overlap.overlap_key(self.identity_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))

    @property
    def overlap_public_key(self) -> bytes:
        return overlap.public_bytes(self.overlap_key)

    def require_roster(self) -> Roster:
        """The pinned roster; PrivacyError when the site has none (it then serves no secagg/he task)."""
        if self.roster is None:
            raise PrivacyError(f"site {self.name!r} has no consortium roster ([keys] roster; `fedgwas-site init "
                               f"--roster FILE`) and refuses every secure-aggregation or HE task")
        return self.roster

    def cohort(self, request: CohortRequest, extra: SampleTable | None = None, extra_key: str = "",
               study_id: str = "") -> Cohort:
        """Analysed samples for ``request`` (raises InputError for unknown names/non-numeric values).

        At a site with a consent table, only participants whose consent covers the request's declared
        data use are analysed, and a request without a declared data use is refused (PrivacyError).
        Covariates found in ``extra`` (the site's PCA scores, cached under ``extra_key``) come from it.
        Participants this site shares with another and left out of ``study_id`` (:meth:`exclude_shared`)
        are not analysed in it.
        """
        with self._lock:
            shared = self._shared.get(study_id, frozenset()) if study_id else frozenset()
            if (request, extra_key, shared) not in self._cohorts:
                include = self._consented(request)
                if shared:
                    kept = ~np.isin(self.genotypes.fam.iid.astype(str), np.array(sorted(shared), dtype=str))
                    include = kept if include is None else include & kept
                self._cohorts[request, extra_key, shared] = build_cohort(
                    self.genotypes.fam, self.pheno, request.phenotype, self.covar, request.covariates,
                    request.phenotype_coding, include=include, extra=extra,
                    missing_value=request.missing_value,
                )
            return self._cohorts[request, extra_key, shared]

    def exclude_shared(self, study_id: str, iids: Sequence[str]) -> None:
        """Leave the participants ``iids`` (shared with another site) out of every later cohort of
        ``study_id`` (added to those already left out; kept for the agent's lifetime)."""
        with self._lock:
            self._shared[study_id] = self._shared.get(study_id, frozenset()) | frozenset(map(str, iids))

    def excludes_shared(self, study_id: str) -> bool:
        """Whether this site has run the one-sided overlap exchange of ``study_id`` (even with none shared)."""
        with self._lock:
            return study_id in self._shared

    def read_block(self, variant_index: np.ndarray, sample_index: np.ndarray, cache: bool = False,
                   dosage: bool = False) -> np.ndarray:
        """int8 genotypes ``(n, m)`` of a block; with ``cache``, kept in memory (up to the site's
        ``[compute] genotype_cache_mib``) for the next rounds over the same samples (see :class:`GenotypeCache`).

        With ``dosage``, at a site whose genotypes have dosages (BGEN, .pgen, VCF DS/GP), float32
        dosages with NaN for missing instead."""
        dosage = dosage and has_dosages(self.genotypes)
        if not cache:
            return self.genotypes.read_dosages(variant_index, sample_index) if dosage else \
                self.genotypes.read_block(variant_index, sample_index)
        return self._cache.read(self.genotypes, variant_index, sample_index, dosage)

    @property
    def source_spec(self) -> SourceSpec:
        """How a compute worker opens this site's genotype files."""
        config = self.config
        return SourceSpec(config.genotype_format, config.genotypes, config.path.parent / "cache", config.threads,
                          config.sample, config.vcf_dosage, config.hard_calls)

    def store_for(self, sample_index: np.ndarray) -> StoreSpec:
        """The spill store of the cohort ``sample_index`` (site_agent/compute/store.py), created on first
        use; a site keeps one cohort's store at a time."""
        identity = source_identity(_genotype_file(self.config))
        if not self.config.hard_calls.default:  # the stored hard calls depend on the hard-call threshold
            identity += f"|{self.config.hard_calls!r}"
        spill_dir = self.config.compute.spill_dir or self.config.path.parent / "cache"
        spec = store_spec(spill_dir, identity, sample_index, self.genotypes.n_variants)
        with self._lock:
            if spec != self._store:
                prepare_store(spec)
                self._store = spec
        return spec

    def backend(self) -> ComputeBackend:
        """The site's compute backend (``[compute]``), started on first use."""
        with self._backend_lock:
            if self._backend is None:
                self._backend = make_backend(self.config.compute)
            return self._backend

    def close(self) -> None:
        """Stop the compute backend if one was started (a local Dask cluster)."""
        with self._backend_lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def _consented(self, request: CohortRequest) -> np.ndarray | None:
        if self.consent is None:
            return None
        if request.data_use is None:
            raise PrivacyError(f"site {self.name!r} keeps participant consent (DUO codes): the study must declare "
                               f"its data use (purpose GRU, HMB, POA or DS:<term>; commercial or not)")
        fam = self.genotypes.fam
        return consent_mask(fam.fid, fam.iid, self.consent.fid, self.consent.iid, self.consent.columns["DUO"],
                            request.data_use, repr(str(self.consent.path)))


class GenotypeCache:
    """The genotypes of one cohort (sample set) kept in memory, variant by variant, for the tasks that
    pass over the same data several times: PCA's rounds, the Newton rounds of logistic regression.

    Variants are stored as columns of one int8 ``(n, capacity)`` matrix, filled as they are first
    read (memory is committed only for what was read). ``capacity`` is the site's variants, or fewer
    when ``n x variants`` exceeds ``max_bytes``: later variants then go through ``spill`` (the cohort's
    spill store on site-local disk, site_agent/compute/store.py), or without it are read from the
    genotype file every time.
    Later rounds may ask for any subset (the variants still iterating): contiguous ranges are served
    as read-only views, other subsets as copies. A cohort with other samples replaces the cached one.
    """

    def __init__(self, max_bytes: int, spill: Callable[[np.ndarray], StoreSpec] | None = None) -> None:
        self.max_bytes = max_bytes
        self._spill = spill
        self._family = b""
        self._matrix = np.empty((0, 0), dtype=np.int8)
        self._loaded = np.zeros(0, dtype=bool)
        self._lock = threading.Lock()

    def read(self, genotypes: GenotypeSource, variant_index: np.ndarray, sample_index: np.ndarray,
             dosage: bool = False) -> np.ndarray:
        """int8 ``(n, m)`` genotypes of ``variant_index`` (site rows) for ``sample_index``; with
        ``dosage``, float32 dosages (``genotypes.read_dosages``; the cache then holds 4 bytes a value)."""
        read = genotypes.read_dosages if dosage else genotypes.read_block  # type: ignore[attr-defined]
        matrix, loaded = self._matrix_for(genotypes, sample_index, np.dtype(np.float32 if dosage else np.int8))
        inside = variant_index < matrix.shape[1]
        if np.all(inside):
            return self._cached(read, matrix, loaded, variant_index, sample_index)
        if not np.any(inside):
            return self._beyond(genotypes, read, dosage, variant_index, sample_index)
        out = np.empty((len(sample_index), len(variant_index)), dtype=matrix.dtype, order="F")
        out[:, inside] = self._cached(read, matrix, loaded, variant_index[inside], sample_index)
        out[:, ~inside] = self._beyond(genotypes, read, dosage, variant_index[~inside], sample_index)
        return out

    def _beyond(self, genotypes: GenotypeSource, read, dosage: bool,  # type: ignore[no-untyped-def]
                variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
        """Variants beyond the memory capacity: through the (int8) spill store, or from the genotype file
        without one (and always for dosages, which the int8 store cannot hold)."""
        if self._spill is None or dosage:
            return read(variant_index, sample_index)
        return read_through(self._spill(sample_index), genotypes, variant_index, sample_index)

    def _matrix_for(self, genotypes: GenotypeSource, sample_index: np.ndarray,
                    dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        family = hashlib.blake2b(np.ascontiguousarray(sample_index).tobytes() + dtype.str.encode(),
                                 digest_size=16).digest()
        with self._lock:
            if family != self._family:
                n = len(sample_index)
                capacity = min(genotypes.n_variants, self.max_bytes // max(n * dtype.itemsize, 1))
                self._family = family
                self._matrix = np.empty((n, capacity), dtype=dtype, order="F")
                self._loaded = np.zeros(capacity, dtype=bool)
            return self._matrix, self._loaded

    @staticmethod
    def _cached(read, matrix: np.ndarray, loaded: np.ndarray, variant_index: np.ndarray,  # type: ignore[no-untyped-def]
                sample_index: np.ndarray) -> np.ndarray:
        absent = variant_index[~loaded[variant_index]]
        if len(absent):
            matrix[:, absent] = read(absent, sample_index)
            loaded[absent] = True  # after the columns are written: a concurrent reader sees whole columns
        first = int(variant_index[0]) if len(variant_index) else 0
        if len(variant_index) and np.array_equal(variant_index, np.arange(first, first + len(variant_index))):
            view = matrix[:, first: first + len(variant_index)]
        else:
            view = matrix[:, variant_index]
        view.setflags(write=False)
        return view


def _genotype_file(config: SiteConfig) -> Path:
    """The file holding the site's genotypes (.bed, .pgen or the VCF/BCF): its identity keys the spill store."""
    path = config.genotypes
    if config.genotype_format == "plink1":
        from engine.io.plink import bfile_paths

        return bfile_paths(path)[0]
    if config.genotype_format == "pgen":
        return Path(f"{path.with_suffix('') if path.suffix in ('.pgen', '.pvar', '.psam') else path}.pgen")
    return path


def load_site_data(config: SiteConfig) -> SiteData:
    """Open and validate everything the config points to (raises InputError naming the file).

    The ledger is checked first (site_agent/head_publisher.py): a site whose ledger was tampered with,
    rolled back or deleted since it last published its signed head refuses to start, since its record
    of spent privacy budget can no longer be trusted.
    """
    ledger, heads = open_checked_ledger(config)
    identity = roster_module.load_identity_key(config.identity_key)
    roster = load_pinned_roster(config, identity)
    return SiteData(
        config=config,
        genotypes=open_genotypes(config.genotype_format, config.genotypes, config.path.parent / "cache",
                                 num_threads=config.threads, sample=config.sample, vcf_dosage=config.vcf_dosage,
                                 hard_calls=config.hard_calls),
        pheno=read_sample_table(config.pheno),
        covar=None if config.covar is None else read_sample_table(config.covar),
        identity_key=identity,
        ledger=ledger,
        consent=None if config.consent is None else read_consent_table(config.consent),
        heads=heads,
        roster=roster,
    )


def load_pinned_roster(config: SiteConfig, identity: Ed25519PrivateKey) -> Roster | None:
    """The site's roster (None without one), after checking that it lists this site with its identity key
    (and, when the roster pins one, this site's TLS certificate)."""
    if config.roster is None:
        return None
    roster = roster_module.load_roster(config.roster)
    entry = roster.get(config.name)
    if entry is None:
        raise ConfigError(f"roster {str(config.roster)!r} does not list this site {config.name!r}")
    if entry.identity_key != roster_module.public_bytes(identity):
        raise ConfigError(f"roster {str(config.roster)!r} lists another identity key for {config.name!r} "
                          f"({entry.fingerprint[:16]}) than {str(config.identity_key)!r}")
    if entry.certificate_sha256 and config.tls is not None:
        try:
            pem = config.tls.cert.read_bytes()
        except OSError as exc:
            raise ConfigError(f"[tls] cert {str(config.tls.cert)!r} cannot be read: {exc.strerror}") from None
        if roster_module.certificate_sha256(pem) != entry.certificate_sha256:
            raise ConfigError(f"roster {str(config.roster)!r} pins another certificate for {config.name!r} than "
                              f"[tls] cert {str(config.tls.cert)!r}")
    return roster


def read_consent_table(path: Path) -> SampleTable:
    """The ``#FID IID DUO`` consent table, every code parsed and every participant listed once."""
    table = read_sample_table(path)
    if list(table.names) != ["DUO"]:
        raise InputError(f"consent table {str(path)!r} must have exactly one column DUO after the IDs, "
                         f"found {list(table.names)}")
    for code in set(table.columns["DUO"].tolist()):
        parse_duo(code, f"consent table {str(path)!r}")
    keys = table.iid if table.fid is None else np.char.add(np.char.add(table.fid, "\t"), table.iid)
    if len(np.unique(keys)) != len(keys):
        raise InputError(f"consent table {str(path)!r} lists a participant more than once")
    return table
