"""Request bodies against a model's column signature: every bad one is a 4xx naming what is wrong."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from airflow_provider_rayops.serving.payload import BadPayload, Column, columns_of_signature, parse_rows

COLUMNS = columns_of_signature(
    [
        {"name": "tenure_months", "type": "long"},
        {"name": "monthly_charges", "type": "double"},
        {"name": "paperless_billing", "type": "boolean"},
        {"name": "plan", "type": "string"},
    ]
)
ROW = {"tenure_months": 3, "monthly_charges": 80, "paperless_billing": True, "plan": "basic"}


def _parse(document, *, content_type="application/json", max_bytes=1 << 20, max_rows=100):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_rows(body, content_type=content_type, columns=COLUMNS, max_bytes=max_bytes, max_rows=max_rows)


def _refused(document, **kwargs) -> BadPayload:
    with pytest.raises(BadPayload) as caught:
        _parse(document, **kwargs)
    return caught.value


def test_records_and_split_give_the_same_typed_table_in_the_models_column_order():
    shuffled = {k: ROW[k] for k in reversed(ROW)}
    by_records = _parse({"dataframe_records": [shuffled, {**ROW, "tenure_months": 40.0, "plan": None}]})
    by_split = _parse({"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values()), [40, 80, True, None]]}})
    assert by_records.equals(by_split)
    assert by_records.schema == pa.schema(
        [
            ("tenure_months", pa.int64()),
            ("monthly_charges", pa.float64()),
            ("paperless_billing", pa.bool_()),
            ("plan", pa.string()),
        ]
    )
    assert by_records.column("tenure_months").to_pylist() == [3, 40]
    assert by_records.column("monthly_charges").to_pylist() == [80.0, 80.0]  # a whole number is a number
    assert by_records.column("plan").to_pylist() == ["basic", None]  # nulls are taken


def test_a_key_absent_from_one_record_is_a_null_there():
    table = _parse({"dataframe_records": [ROW, {k: v for k, v in ROW.items() if k != "plan"}]})
    assert table.column("plan").to_pylist() == ["basic", None]


@pytest.mark.parametrize(
    ("document", "status", "reason"),
    [
        (b'{"dataframe_records": [', 400, "malformed JSON at line 1 column 24"),
        (b"\xc3\x28", 400, "not UTF-8"),
        ({"instances": [ROW]}, 400, "dataframe_records or dataframe_split; found ['instances']"),
        ([ROW], 400, "found list"),
        ({"dataframe_records": ROW}, 400, "dataframe_records must be a list of objects"),
        ({"dataframe_split": {"columns": list(ROW), "data": [[1, 2]]}}, 400, "row 0 must be a list of 4 values"),
        ({"dataframe_split": {"columns": ["plan", "plan"], "data": []}}, 400, "names a column twice"),
        (
            {"dataframe_records": [{**ROW, "churned": False}]},
            400,
            "unknown column(s) ['churned']; the model takes ['tenure_months'",
        ),
        ({"dataframe_records": [{k: v for k, v in ROW.items() if k != "plan"}]}, 400, "missing column(s) ['plan']"),
        (
            {"dataframe_records": [{**ROW, "monthly_charges": "a lot"}]},
            400,
            "column 'monthly_charges' row 0: expected a number, found \"a lot\"",
        ),
        (
            {"dataframe_records": [ROW, {**ROW, "tenure_months": 2.5}]},
            400,
            "column 'tenure_months' row 1: expected a whole number, found 2.5",
        ),
        ({"dataframe_records": [{**ROW, "tenure_months": True}]}, 400, "expected a whole number, found true"),
        (
            {"dataframe_records": [{**ROW, "paperless_billing": "yes"}]},
            400,
            "column 'paperless_billing' row 0: expected true or false",
        ),
        ({"dataframe_records": [{**ROW, "plan": 3}]}, 400, "column 'plan' row 0: expected text, found 3"),
    ],
)
def test_a_bad_body_is_a_400_that_says_what_is_wrong(document, status, reason):
    refused = _refused(document)
    assert refused.status == status
    assert reason in refused.reason


def test_size_type_and_row_limits():
    assert _refused({"dataframe_records": [ROW] * 50}, max_bytes=1000).status == 413
    assert _refused({"dataframe_records": [ROW]}, content_type="text/csv").status == 415
    assert _refused({"dataframe_records": [ROW]}, content_type=None).status == 415
    assert _parse({"dataframe_records": [ROW]}, content_type="application/json; charset=utf-8").num_rows == 1
    refused = _refused({"dataframe_records": [ROW] * 101})
    assert (refused.status, refused.reason) == (400, "101 rows in one request; the limit is 100")


def test_a_signature_that_is_not_columns_of_known_types_is_refused():
    with pytest.raises(ValueError, match="not a named column"):
        columns_of_signature([{"name": "x", "type": "tensor"}])
    assert columns_of_signature([{"name": "x", "type": "double"}]) == [Column("x", "double")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"dataframe_records": [{"tenure_months": ' + b"9" * 5000 + b"}]}", "malformed JSON: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            json.dumps({"dataframe_records": [{**ROW, "tenure_months": 2**70}]}).encode(),
            "expected a whole number, found 1180591620717411303424",
        ),
        (
            json.dumps({"dataframe_records": [{**ROW, "monthly_charges": 10**400}]}).encode(),
            "column 'monthly_charges' row 0: expected a number",
        ),
    ],
)
def test_values_python_or_arrow_cannot_hold_are_400s_too(body, reason):
    refused = _refused(body)
    assert refused.status == 400 and reason in refused.reason, refused.reason


def test_many_distinct_keys_are_refused_without_a_quadratic_scan():
    wide = {"dataframe_records": [{f"k{i}": i for i in range(50_000)}]}
    refused = _refused(wide, max_bytes=10 << 20)
    assert refused.reason.startswith("unknown column(s) ['k0', 'k1'")
