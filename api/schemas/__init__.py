"""Request and response bodies of API v1 (the contract is docs/api.md), by subject: `base` (strict bodies,
responses, problems, pages), `catalog` (datasets, models, versions), `requests` (deletion requests),
`diagnostics` (what GET of one request adds), `attacks` (the auditor's attacks on a curve point), `erasures`
(subject-wide erasures), `audit` (events, signing keys), `meta` (GET /v1/meta).
Importers use `api.schemas`."""

from api.schemas.attacks import PointAttackIn, PointAttackOut, PointAttacksOut
from api.schemas.audit import EventOut, SigningKeyOut, SigningKeysOut
from api.schemas.base import Out, Page, ProblemOut, Strict
from api.schemas.catalog import (
    Augmentation,
    DatasetOut,
    InputTransform,
    ModelOut,
    ModelUpdateIn,
    PreprocessingOut,
    VersionOut,
)
from api.schemas.diagnostics import DeletionRequestDetailOut, RollbackOut, TimingsOut, TrainingOut
from api.schemas.erasures import (
    BulkErasuresIn,
    BulkErasuresOut,
    BulkItemIn,
    BulkResultOut,
    ErasureIn,
    ErasureOut,
    FiledRequestOut,
    SkippedModelOut,
)
from api.schemas.integrations import FidesIdentityIn, FidesWebhookIn, FidesWebhookOut
from api.schemas.meta import BaseMethodOut, MetaOut
from api.schemas.requests import (
    ApprovalIn,
    ApprovalOut,
    CurveOut,
    CurvePointOut,
    DeletionRequestIn,
    DeletionRequestOut,
    ErasureCriterionOut,
    ExtensionIn,
    ExtensionOut,
    ForgetIn,
    ProgressOut,
    SelectionIn,
    SelectionOut,
)

__all__ = [
    "ApprovalIn",
    "ApprovalOut",
    "Augmentation",
    "BaseMethodOut",
    "BulkErasuresIn",
    "BulkErasuresOut",
    "BulkItemIn",
    "BulkResultOut",
    "CurveOut",
    "CurvePointOut",
    "DatasetOut",
    "DeletionRequestDetailOut",
    "DeletionRequestIn",
    "DeletionRequestOut",
    "ErasureCriterionOut",
    "ErasureIn",
    "ErasureOut",
    "EventOut",
    "ExtensionIn",
    "ExtensionOut",
    "FidesIdentityIn",
    "FidesWebhookIn",
    "FidesWebhookOut",
    "FiledRequestOut",
    "ForgetIn",
    "InputTransform",
    "MetaOut",
    "ModelOut",
    "ModelUpdateIn",
    "Out",
    "Page",
    "PointAttackIn",
    "PointAttackOut",
    "PointAttacksOut",
    "PreprocessingOut",
    "ProblemOut",
    "ProgressOut",
    "RollbackOut",
    "SelectionIn",
    "SelectionOut",
    "SigningKeyOut",
    "SigningKeysOut",
    "SkippedModelOut",
    "Strict",
    "TimingsOut",
    "TrainingOut",
    "VersionOut",
]
