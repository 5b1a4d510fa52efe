"""Content hashes: the same data hashes the same however it was stored."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from airflow_provider_rayops.storage import content_hash, table_content_hash

TABLE = pa.table(
    {
        "tenure_months": pa.array([1, 24, None, 7], pa.int64()),
        "monthly_charges": pa.array([20.5, float("nan"), 70.0, 99.9]),
        "plan": pa.array(["basic", "pro", None, "basic"]),
        "churned": pa.array([True, False, False, None]),
    }
)


def test_content_hash_is_sha256_of_the_bytes_or_their_chunks() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert content_hash([b"a", b"bc"]) == hashlib.sha256(b"abc").hexdigest()


def test_table_hash_ignores_chunking_dictionary_encoding_and_metadata() -> None:
    chunked = pa.concat_tables([TABLE.slice(0, 1), TABLE.slice(1, 2), TABLE.slice(3)])
    encoded = TABLE.set_column(2, "plan", TABLE.column("plan").dictionary_encode())
    with_meta = TABLE.replace_schema_metadata({b"pandas": b"{}"})
    large = TABLE.set_column(2, "plan", TABLE.column("plan").cast(pa.large_string()))
    expected = table_content_hash(TABLE)
    for variant in (chunked, encoded, with_meta, large):
        assert table_content_hash(variant) == expected


def test_table_hash_is_the_same_from_csv_and_parquet() -> None:
    table = TABLE.drop_null().drop_columns(["monthly_charges"])
    csv_buf, pq_buf = io.BytesIO(), io.BytesIO()
    pacsv.write_csv(table, csv_buf)
    pq.write_table(table, pq_buf)
    from_csv = pacsv.read_csv(io.BytesIO(csv_buf.getvalue()))
    from_parquet = pq.read_table(io.BytesIO(pq_buf.getvalue()))
    assert table_content_hash(from_csv) == table_content_hash(from_parquet) == table_content_hash(table)


def test_table_hash_tells_null_from_zero_and_empty_string() -> None:
    zeros = pa.table({"x": pa.array([0, 1]), "s": pa.array(["", "a"])})
    nulls = pa.table({"x": pa.array([None, 1], pa.int64()), "s": pa.array(["", "a"])})
    empty_null = pa.table({"x": pa.array([0, 1]), "s": pa.array([None, "a"], pa.string())})
    assert len({table_content_hash(zeros), table_content_hash(nulls), table_content_hash(empty_null)}) == 3


def test_table_hash_changes_with_values_names_order_and_types() -> None:
    base = table_content_hash(TABLE)
    assert table_content_hash(TABLE.set_column(0, "tenure_months", pa.array([2, 24, None, 7]))) != base
    assert table_content_hash(TABLE.rename_columns(["a", "monthly_charges", "plan", "churned"])) != base
    assert table_content_hash(TABLE.select(["plan", "tenure_months", "monthly_charges", "churned"])) != base
    assert table_content_hash(TABLE.set_column(0, "tenure_months", TABLE.column(0).cast(pa.int32()))) != base
    assert table_content_hash(TABLE.slice(0, 3)) != base


def test_string_boundaries_matter() -> None:
    a = pa.table({"s": ["ab", "c"]})
    b = pa.table({"s": ["a", "bc"]})
    assert table_content_hash(a) != table_content_hash(b)
