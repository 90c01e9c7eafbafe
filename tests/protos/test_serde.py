"""The wire format in both directions: what the coordinator encodes the site decodes to the same value."""

from __future__ import annotations

import pytest

from engine.cohort.consent import DataUse
from engine.errors import ProtocolError
from engine.tasks import CohortRequest
from protos import serde
from protos import site_agent_pb2 as pb


@pytest.mark.parametrize("cohort", [
    CohortRequest("QT"),
    CohortRequest("BT", ("SEX_MALE", "PC1", "PC2"), "case-control", DataUse("HMB", True), pca_run="0f" * 16),
    CohortRequest("", (), "quantitative", DataUse("DS:MONDO:0005148")),
])
def test_cohort_round_trips(cohort: CohortRequest) -> None:
    assert serde.cohort_from_proto(serde.cohort_to_proto(cohort)) == cohort


@pytest.mark.parametrize("run", ["../etc", "x" * 65, "ABC"])
def test_a_pca_run_that_is_not_a_run_identifier_is_refused(run: str) -> None:
    with pytest.raises(ProtocolError, match="cohort.pca_run"):
        serde.cohort_from_proto(pb.CohortSpec(phenotype="QT", pca_run=run))


def test_names_longer_than_the_limit_are_refused() -> None:
    with pytest.raises(ProtocolError, match="at most"):
        serde.cohort_from_proto(pb.CohortSpec(phenotype="Q" * 300))
