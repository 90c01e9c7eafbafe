"""Fixtures shared across the suite: PLINK 2 (the independent oracle) and the real HapMap3 data split into sites.

Per-module fixtures (simulated cohorts with a module's own shape, servers of one role) stay in their
modules; what several modules need is made once per session here.
"""

from __future__ import annotations

import pytest

from tests.plink_tools import HM3_BFILE, SplitStudy, ensure_plink2, hm3_population_groups, split_by_groups


@pytest.fixture(scope="session")
def plink2() -> str:
    """Path to plink2 (installed with apt-get when missing, never skipped)."""
    return ensure_plink2()


@pytest.fixture(scope="session")
def hm3_split(tmp_path_factory: pytest.TempPathFactory) -> SplitStudy:
    """HapMap3 founders split by continental group into 4 site filesets, and the pooled fileset.

    Read-only for tests: every test that runs a study writes into its own ``tmp_path``.
    """
    return split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path_factory.mktemp("hm3_split"))
