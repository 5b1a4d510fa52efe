"""The one task of a `broken__<file>` DAG: it fails with the config errors of that file.

Why a DAG at all: an exception escaping a DAG file drops every DAG in it, and warnings
raised while parsing are never shown in the UI (checked on Airflow 3.3.2). A visible DAG whose docs
and task failure carry the exact errors keeps the other pipelines loaded and tells the
person what to fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class InvalidPipelineConfig(Exception):
    """A pipeline YAML file failed validation; the message lists file:line:col of every problem."""


class ConfigErrorOperator(BaseOperator):
    """Fails with the validation errors of one pipeline file. Set `errors` to their text."""

    ui_color = "#f4a6a6"

    def __init__(self, *, errors: str, config_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors = errors
        self.config_file = config_file

    def execute(self, context: Context) -> None:
        raise InvalidPipelineConfig(
            f"{self.config_file} is not a valid rayops pipeline; fix these and the pipeline's DAG replaces this one:\n{self.errors}"
        )
