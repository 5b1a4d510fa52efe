"""Request bodies of a served model, checked against its column signature.

A body is JSON in MLflow's scoring format, so a client of `mlflow models serve` works unchanged:

    {"dataframe_records": [{"tenure_months": 3, "plan": "basic", ...}, ...]}
    {"dataframe_split": {"columns": ["tenure_months", "plan", ...], "data": [[3, "basic", ...], ...]}}

`parse_rows` turns it into a pyarrow Table with exactly the model's columns, typed by the
signature (`long`, `double`, `boolean`, `string`), or raises `BadPayload` with the HTTP status
and a reason that names the column and the row: 413 for a body over the size limit, 415 for a
body that is not JSON, 400 for malformed JSON, an unknown shape, unknown or missing columns,
a value of the wrong type, or too many rows. A null is taken in any column: the encoder fills
it as it filled the training data's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# The signature types a rayops model's columns have (jobs/modeling/mlflow_model.py input_schema).
SIGNATURE_TYPES = ("long", "double", "boolean", "string")
# What a value of each type is called in an error.
_WORDS = {"long": "a whole number", "double": "a number", "boolean": "true or false", "string": "text"}
_SHOWN = 8  # column names listed in an error before "..."
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = 2**1023


class BadPayload(ValueError):
    """A request the model cannot take; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of SIGNATURE_TYPES


def columns_of_signature(inputs: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The columns of an MLflow column signature's inputs (`[{"name", "type"}, ...]`, as in MLmodel)."""
    columns = []
    for spec in inputs:
        if spec.get("type") not in SIGNATURE_TYPES or not spec.get("name"):
            raise ValueError(f"signature input {dict(spec)} is not a named column of type {'/'.join(SIGNATURE_TYPES)}")
        columns.append(Column(name=str(spec["name"]), type=str(spec["type"])))
    return columns


def parse_rows(body: bytes, *, content_type: str | None, columns: Sequence[Column], max_bytes: int, max_rows: int) -> pa.Table:
    """The rows of `body` as a Table of exactly `columns`, or BadPayload (see the module docstring)."""
    if len(body) > max_bytes:
        raise BadPayload(413, f"the body is {len(body)} bytes; the limit is {max_bytes}")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise BadPayload(415, f"the body must be application/json, not {media or 'untyped'}")
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise BadPayload(400, "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadPayload(400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BadPayload(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadPayload(400, "malformed JSON: nested too deeply") from None
    names, rows = _records(document)
    if len(rows) > max_rows:
        raise BadPayload(400, f"{len(rows)} rows in one request; the limit is {max_rows}")
    expected = [c.name for c in columns]
    unknown = [n for n in names if n not in expected]
    missing = [n for n in expected if n not in names]
    if unknown:
        raise BadPayload(400, f"unknown column(s) {_listed(unknown)}; the model takes {_listed(expected)}")
    if missing:
        raise BadPayload(400, f"missing column(s) {_listed(missing)}; the model takes {_listed(expected)}")
    return _table(columns, names, rows)


def _records(document: Any) -> tuple[list[str], list[Sequence[Any]]]:
    """(column names, rows as value lists in that order) of either accepted shape."""
    if not isinstance(document, dict) or len(document) != 1 or not ({"dataframe_records", "dataframe_split"} & set(document)):
        found = sorted(document)[:_SHOWN] if isinstance(document, dict) else type(document).__name__
        raise BadPayload(400, f"expected an object with one key, dataframe_records or dataframe_split; found {found}")
    if "dataframe_records" in document:
        records = document["dataframe_records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BadPayload(400, "dataframe_records must be a list of objects, one per row")
        seen: dict[str, None] = {}
        for record in records:
            seen.update(dict.fromkeys(record))
        names = list(seen)
        # A key absent from a row is a missing value there, as in pandas.DataFrame(records).
        return names, [[record.get(n) for n in names] for record in records]
    split = document["dataframe_split"]
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
        raise BadPayload(400, "dataframe_split must be an object with a columns list and a data list of rows")
    names = [str(n) for n in split["columns"]]
    if len(set(names)) != len(names):
        raise BadPayload(400, f"dataframe_split names a column twice: {_listed(names)}")
    for i, row in enumerate(split["data"]):
        if not isinstance(row, list) or len(row) != len(names):
            raise BadPayload(400, f"dataframe_split row {i} must be a list of {len(names)} values, one per column")
    return names, split["data"]


def _table(columns: Sequence[Column], names: list[str], rows: list[Sequence[Any]]) -> pa.Table:
    import pyarrow as pa

    position = {n: i for i, n in enumerate(names)}
    arrays = {}
    for column in columns:
        at = position[column.name]
        values = [row[at] for row in rows]
        for i, value in enumerate(values):
            if value is not None and not _fits(value, column.type):
                raise BadPayload(
                    400, f"column {column.name!r} row {i}: expected {_WORDS[column.type]}, found {json.dumps(value)[:80]}"
                )
        if column.type == "long":
            values = [None if v is None else int(v) for v in values]
        elif column.type == "double":
            values = [None if v is None else float(v) for v in values]
        arrow_type = {"long": pa.int64(), "double": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}[column.type]
        arrays[column.name] = pa.array(values, type=arrow_type)
    return pa.table(arrays)


def _fits(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool):  # JSON true is not the number 1 here
        return False
    if kind == "long":
        whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        return whole and _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, int):
        return abs(value) <= _FLOAT_MAX  # a float64 holds it
    return isinstance(value, float)  # NaN and infinities too: the encoder fills them as nulls


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return f"[{shown}{', ...' if len(names) > _SHOWN else ''}]"
