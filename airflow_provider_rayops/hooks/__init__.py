"""Airflow hooks: one per connection type rayops declares (`rayops_ray`, `rayops_s3`, `rayops_mlflow`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


class WrongConnectionType(ValueError):
    """A pipeline named a connection of another type than the one rayops reads there."""


def checked(conn: Any, *, conn_id: str, conn_type: str) -> Any:
    """`conn`, if it is of `conn_type`. Pipeline YAML names connections by id, and their values
    reach Ray jobs: only connections made for rayops may be used, never e.g. `aws_default` or
    the metadata database's."""
    if conn.conn_type != conn_type:
        raise WrongConnectionType(
            f"connection {conn_id!r} is of type {conn.conn_type!r}; rayops reads only connections of type "
            f"{conn_type!r} here (create one for it: its values are handed to Ray jobs)"
        )
    return conn


def connection_url(host: str | None, port: int | None, *, default_scheme: str | None = "http") -> str | None:
    """The URL a connection's host and port fields name, the way the three rayops hooks read them.

    `host` may carry a scheme (`https://ray.example:8443/`) or not (`ray-head.ml`); without one it
    gets `default_scheme` (None: left bare, for S3, whose `secure` extra decides). The port field
    is used only when the host names no port. Surrounding space and trailing slashes are dropped.
    None when host is empty.
    """
    text = (host or "").strip().rstrip("/")
    if not text:
        return None
    has_scheme = "://" in text
    if not has_scheme and default_scheme:
        text, has_scheme = f"{default_scheme}://{text}", True
    parts = urlsplit(text if has_scheme else f"//{text}")
    if port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    url = urlunsplit(parts)
    return url if has_scheme else url.removeprefix("//")
