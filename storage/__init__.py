"""Object storage (local folder or S3) and safetensors helpers; see docs/design.md, "Layout"."""

from storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    rewound,
    sweep_scratch_files,
)
from storage.cache import LocalCache
from storage.factory import open_store
from storage.local import LocalStore
from storage.s3 import S3Store
from storage.safetensors_io import (
    InvalidSafetensors,
    TensorInfo,
    load_numpy,
    read_header,
    save_numpy,
    sha256_file,
)

__all__ = [
    "InvalidSafetensors",
    "LocalCache",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectTooLarge",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "TensorInfo",
    "load_numpy",
    "open_store",
    "read_header",
    "rewound",
    "save_numpy",
    "sha256_file",
    "sweep_scratch_files",
]
