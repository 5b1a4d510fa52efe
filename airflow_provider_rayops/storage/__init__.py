"""The storage plane: one small API over `file://` and `s3://` URIs (MinIO in production).

Used by the Ray jobs and by the Airflow operators alike, so nothing here imports Airflow.
Endpoint and credentials for `s3://` come from `S3Settings` (built by the `rayops_s3`
connection's hook, or from the environment inside a Ray job), never from URIs or YAML.

    from airflow_provider_rayops import storage

    storage.write_bytes("s3://models/churn/card.json", b"{}")   # atomic
    fs, path = storage.filesystem("file://data/churn.parquet")    # for pyarrow / Ray Data
"""

from airflow_provider_rayops.storage.hashing import TableHasher, content_hash, table_content_hash
from airflow_provider_rayops.storage.ops import (
    delete,
    download_folder,
    exists,
    filesystem,
    list_uris,
    open_write,
    read_bytes,
    write_bytes,
)
from airflow_provider_rayops.storage.settings import S3Settings
from airflow_provider_rayops.storage.snapshot import MANIFEST_NAME, SnapshotWriter, read_manifest, write_snapshot
from airflow_provider_rayops.storage.uri import (
    InvalidURIError,
    StorageConfigError,
    StorageError,
    StorageNotFoundError,
    StorageURI,
    join_uri,
    parse_uri,
    resolve_uri,
)

__all__ = [
    "MANIFEST_NAME",
    "InvalidURIError",
    "S3Settings",
    "SnapshotWriter",
    "StorageConfigError",
    "StorageError",
    "StorageNotFoundError",
    "StorageURI",
    "TableHasher",
    "content_hash",
    "delete",
    "download_folder",
    "exists",
    "filesystem",
    "join_uri",
    "list_uris",
    "open_write",
    "parse_uri",
    "read_bytes",
    "read_manifest",
    "resolve_uri",
    "table_content_hash",
    "write_bytes",
    "write_snapshot",
]
