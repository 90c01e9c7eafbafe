"""Typed TaskHeader fields <-> the task's internal parameter entries, both directions side by side.

Every protocol-critical value (request id, DP request, check-only phase, genotype caching, PCA score
flags, the site that dropped shared participants) travels as a typed, documented field of ``TaskHeader`` (protos/site_agent.proto); inside the
engine a task keeps them in :attr:`engine.tasks.TaskSpec.parameters` under the keys below, which the
canonical task encoding (:func:`engine.privacy.secure_round.task_digest`) covers. The free-form
``TaskHeader.parameters`` map carries nothing a site decides on: a site refuses any key in it.
"""

from __future__ import annotations

from typing import Any, Mapping

from engine.audit.records import REQUEST_ID_KEY
from engine.privacy.dp_release import CHECK_PHASE, KEYS as DP_KEYS, PHASE_KEY, DpRequest
from engine.errors import ProtocolError
from engine.stats.pca.kernel import SCORES_PARAMETER
from engine.tasks import DROP_SHARED_PARAMETER, KEEP_GENOTYPES_PARAMETER
from protos import site_agent_pb2 as pb

#: Internal parameter keys carried by typed header fields (never by the free-form map).
TYPED_KEYS = frozenset({REQUEST_ID_KEY, PHASE_KEY, KEEP_GENOTYPES_PARAMETER, SCORES_PARAMETER, DROP_SHARED_PARAMETER,
                        *DP_KEYS.values()})


def header_fields(parameters: Mapping[str, str]) -> dict[str, Any]:
    """TaskHeader keyword arguments for a task's parameters (coordinator side)."""
    fields: dict[str, Any] = {"request_id": parameters.get(REQUEST_ID_KEY, ""),
                              "check_only": parameters.get(PHASE_KEY) == CHECK_PHASE,
                              "keep_genotypes": parameters.get(KEEP_GENOTYPES_PARAMETER) == "1",
                              "keep_scores": parameters.get(SCORES_PARAMETER, ""),
                              "drop_shared_from": parameters.get(DROP_SHARED_PARAMETER, "")}
    request = DpRequest.from_parameters(parameters)
    if request is not None:
        fields["dp"] = pb.DpRequest(epsilon=request.epsilon, delta=request.delta, mechanism=request.mechanism,
                                    bounds=[pb.ClipRange(name=n, lo=lo, hi=hi) for n, lo, hi in request.bounds])
    fields["parameters"] = {k: v for k, v in parameters.items() if k not in TYPED_KEYS}
    return fields


def parameters_from_header(header: pb.TaskHeader) -> dict[str, str]:
    """A task's internal parameters from its typed header fields (site side); refuses the free-form map."""
    if header.parameters:
        raise ProtocolError(f"task.parameters: keys {sorted(header.parameters)[:5]} are not accepted (every "
                            f"option a site acts on is a typed TaskHeader field)")
    parameters: dict[str, str] = {}
    if header.request_id:
        parameters[REQUEST_ID_KEY] = header.request_id
    if header.HasField("dp"):
        dp = header.dp
        request = DpRequest(epsilon=dp.epsilon, delta=dp.delta, mechanism=dp.mechanism or "gaussian",
                            bounds=tuple(sorted((b.name, b.lo, b.hi) for b in dp.bounds)))
        parameters.update(request.to_parameters())
    if header.check_only:
        parameters[PHASE_KEY] = CHECK_PHASE
    if header.keep_genotypes:
        parameters[KEEP_GENOTYPES_PARAMETER] = "1"
    if header.keep_scores:
        parameters[SCORES_PARAMETER] = header.keep_scores
    if header.drop_shared_from:
        parameters[DROP_SHARED_PARAMETER] = header.drop_shared_from
    return parameters
