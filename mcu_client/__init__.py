"""A typed Python client of the MCU unlearning service's HTTP API (httpx + pydantic)."""

from mcu_client.client import Client, wait_for
from mcu_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    McuError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestEnded,
    ServiceUnavailable,
    Unauthorized,
)
from mcu_client.types import (
    Curve,
    CurvePoint,
    Dataset,
    DeletionRequest,
    Event,
    Identity,
    Model,
    SigningKeys,
    Version,
)

__all__ = ["ApiError", "BadRequest", "Client", "Conflict", "Curve", "CurvePoint", "Dataset", "DeletionRequest",
           "Event", "Forbidden", "Gone", "Identity", "InvalidInput", "McuError", "Model", "NotFound",
           "PayloadTooLarge", "RateLimited", "RequestEnded", "ServiceUnavailable", "SigningKeys", "Unauthorized",
           "Version", "wait_for"]
