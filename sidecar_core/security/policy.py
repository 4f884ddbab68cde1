"""Who may call which gRPC method: the one table every server of the mesh enforces.

A principal is `service:<name>` (a service's certificate), `operator` (the `sidecar` CLI with
the operator credential) or `adapter` (a PACS adapter, bound to one facility). Anything not
listed is refused: a new method is callable by nobody until it is added here.
"""

from __future__ import annotations

from collections.abc import Mapping

GATEWAY = "service:gateway"
HL7 = "service:hl7"
WORKFLOW = "service:workflow"
OPERATOR = "operator"
ADAPTER = "adapter"
# Any authenticated identity of the mesh (health checks only).
ANYONE = "*"

_INGEST = "sidecar.ingest.v1."
_WORKFLOW = "sidecar.workflow.v1."

# service full name → method name ("*" for every method) → principals allowed.
POLICY: Mapping[str, Mapping[str, frozenset[str]]] = {
    "grpc.health.v1.Health": {"*": frozenset({ANYONE})},
    # Served only with SIDECAR_GRPC_REFLECTION=1, and then to operators only.
    "grpc.reflection.v1alpha.ServerReflection": {"*": frozenset({OPERATOR})},
    "grpc.reflection.v1.ServerReflection": {"*": frozenset({OPERATOR})},
    _INGEST + "IngestService": {
        # What a PACS adapter sends; the facility comes from its certificate.
        "UploadInstances": frozenset({ADAPTER, OPERATOR}),
        # STOW-RS behind the gateway stores for a verified user, in a facility of theirs; the
        # workflow's priors worker stores a prior read by WADO-RS from the facility's PACS.
        "IngestInstances": frozenset({ADAPTER, OPERATOR, GATEWAY, WORKFLOW}),
        "CompleteStudy": frozenset({ADAPTER, OPERATOR, WORKFLOW}),
        # QIDO-RS behind the gateway, for a verified user; operators' tooling.
        "SearchStudies": frozenset({GATEWAY, OPERATOR}),
        "SearchSeries": frozenset({GATEWAY, OPERATOR}),
        "SearchInstances": frozenset({GATEWAY, OPERATOR}),
    },
    _INGEST + "RetrieveService": {"*": frozenset({GATEWAY})},
    _INGEST + "ViewportService": {"*": frozenset({GATEWAY})},
    # The normalizer's own contract, for model teams checking it with the operator credential.
    "sidecar.normalizer.v1.NormalizerService": {"*": frozenset({OPERATOR})},
    _WORKFLOW + "WorkflowService": {"*": frozenset({GATEWAY, OPERATOR})},
    _WORKFLOW + "ReviewService": {
        "*": frozenset({GATEWAY}),
        # `sidecar facility check` follows its test study to a final state.
        "ListWorklist": frozenset({GATEWAY, OPERATOR}),
        "GetStudyDetail": frozenset({GATEWAY, OPERATOR}),
        "ListReviewFindings": frozenset({GATEWAY, OPERATOR}),
    },
    _WORKFLOW + "ReportService": {
        "*": frozenset({GATEWAY}),
        "CompleteReport": frozenset({OPERATOR}),
        "SubmitHl7Message": frozenset({HL7, OPERATOR}),
    },
    _WORKFLOW + "OperationsService": {"*": frozenset({GATEWAY, OPERATOR})},
    _WORKFLOW + "AnalyticsService": {"*": frozenset({GATEWAY, OPERATOR})},
    _WORKFLOW + "FacilityService": {"*": frozenset({GATEWAY, OPERATOR})},
    _WORKFLOW + "AccountService": {"*": frozenset({GATEWAY, OPERATOR})},
}


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' → ('pkg.Service', 'Method')."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def allowed(full_method: str, principal: str,
            policy: Mapping[str, Mapping[str, frozenset[str]]] = POLICY) -> bool:
    """True when `principal` may call `full_method` ('/pkg.Service/Method')."""
    service, method = split_method(full_method)
    methods = policy.get(service)
    if methods is None:
        return False
    who = methods.get(method, methods.get("*", frozenset()))
    return ANYONE in who or principal in who


def callers_of(full_method: str,
               policy: Mapping[str, Mapping[str, frozenset[str]]] = POLICY) -> frozenset[str]:
    service, method = split_method(full_method)
    methods = policy.get(service, {})
    return methods.get(method, methods.get("*", frozenset()))
