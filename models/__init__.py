"""Persistence: SQLAlchemy tables and the session factory."""

from models.audit import record_event
from models.db import make_engine, make_session_factory
from models.erasures import Erasure, ErasureRequest, FidesResume
from models.sql import in_list
from models.tables import (
    ApiKey,
    Base,
    Callback,
    CurvePoint,
    Dataset,
    DeletionRequest,
    ErasedSample,
    Event,
    GridPoint,
    IdempotencyRecord,
    Model,
    ModelVersion,
    PointAttack,
    Sample,
    SampleTombstone,
    SigningKey,
    new_id,
    utcnow,
)

__all__ = [
    "ApiKey",
    "Base",
    "Callback",
    "CurvePoint",
    "Dataset",
    "DeletionRequest",
    "ErasedSample",
    "Erasure",
    "ErasureRequest",
    "Event",
    "FidesResume",
    "GridPoint",
    "IdempotencyRecord",
    "Model",
    "ModelVersion",
    "PointAttack",
    "Sample",
    "SampleTombstone",
    "SigningKey",
    "in_list",
    "make_engine",
    "make_session_factory",
    "new_id",
    "record_event",
    "utcnow",
]
