"""Site approvals name models; the rounds each model runs are admitted, and nothing else."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError, PrivacyError
from engine.models import STATISTICS_OF
from engine.stats.registry import REGISTRY
from site_agent.policy import access_from_toml


def _policy(models: list[str], key: str = "models"):
    return access_from_toml({"study": [{"id": "s1", key: models}], "requesters": ["*"]}, "site.toml")


def test_every_statistic_belongs_to_a_model_and_every_model_names_registered_statistics() -> None:
    used = {s for statistics in STATISTICS_OF.values() for s in statistics}
    assert used == set(REGISTRY)


@pytest.mark.parametrize("round_name", ["covariate_fit", "logistic_start", "logistic", "logistic_exact", "firth"])
def test_a_logistic_approval_admits_every_round_of_the_logistic_fit(round_name: str) -> None:
    _policy(["logistic"]).authorise("a", "s1", round_name, "anyone")


def test_an_approval_refuses_rounds_of_models_it_does_not_name() -> None:
    policy = _policy(["logistic"])
    with pytest.raises(PrivacyError, match="'ld_pairs'"):
        policy.authorise("a", "s1", "ld_pairs", "anyone")
    with pytest.raises(PrivacyError, match="'linear'"):
        policy.authorise("a", "s1", "linear", "anyone")


def test_the_former_key_analyses_is_read_as_models_and_round_names_are_refused() -> None:
    _policy(["qc"], key="analyses").authorise("a", "s1", "qc", "anyone")
    with pytest.raises(ConfigError, match="'covariate_fit' is not one of"):
        _policy(["covariate_fit"])
    with pytest.raises(ConfigError, match="not both"):
        access_from_toml({"study": [{"id": "s1", "models": ["qc"], "analyses": ["qc"]}]}, "site.toml")
