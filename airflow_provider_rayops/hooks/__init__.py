"""Airflow hooks: one per connection type rayops declares (`rayops_ray`, `rayops_s3`, `rayops_mlflow`)."""

from __future__ import annotations

from typing import Any


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
