"""The ingest job, run unchanged over `file://` and `s3://` (moto) sources and snapshot roots."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.jobs.datasets import make_churn
from airflow_provider_rayops.jobs.ingest import SchemaViolation, SourceUnusable, ingest, split
from airflow_provider_rayops.jobs.runtime import JobInputError
from airflow_provider_rayops.storage import join_uri

ROWS = 200


def _churn(rows: int = ROWS) -> pa.Table:
    table = make_churn(rows, seed=11)
    return table.add_column(0, "row_id", pa.array(range(rows), pa.int64()))


def _put(uri: str, table: pa.Table, fmt: str = "parquet") -> str:
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
    else:
        pacsv.write_csv(table, buf)
    storage.write_bytes(uri, buf.getvalue())
    return uri


def _read(uri: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)))


def _ingest(root: str, source: str, **kwargs):
    kwargs.setdefault("target", "churned")
    kwargs.setdefault("min_rows", 100)
    return ingest(source=source, snapshot_root=join_uri(root, "snapshots"), **kwargs)


def test_snapshot_holds_both_splits_and_a_complete_manifest(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    result = _ingest(storage_root, source, split_validation=0.25, seed=3)

    snapshot = join_uri(storage_root, "snapshots", result["content_hash"])
    assert result == {
        "snapshot_uri": snapshot,
        "content_hash": result["content_hash"],
        "rows": {"train": 150, "validation": 50},
        "task": "classification",
        "reused": False,
    }
    assert storage.list_uris(snapshot) == [
        join_uri(snapshot, n) for n in ("manifest.json", "train.parquet", "validation.parquet")
    ]

    manifest = storage.read_manifest(snapshot)
    assert manifest["content_hash"] == result["content_hash"]
    assert manifest["source"] == source
    assert manifest["target"] == "churned"
    assert manifest["rows"] == {"train": 150, "validation": 50, "total": 200}
    assert manifest["task"] == "classification"
    assert manifest["split"] == {"validation": 0.25, "seed": 3, "algorithm": "stratified-v1", "stratified_by": "churned"}
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    columns = {c["name"]: (c["type"], c["kind"], c["role"]) for c in manifest["columns"]}
    assert columns["monthly_charges"] == ("double", "numeric", "feature")
    assert columns["plan"] == ("string", "categorical", "feature")
    assert columns["paperless_billing"] == ("bool", "bool", "feature")
    assert columns["churned"] == ("bool", "bool", "target")
    assert manifest["categories"]["plan"] == ["basic", "premium", "standard"]
    assert set(manifest["files"]) == {"train.parquet", "validation.parquet"}


def test_splits_partition_the_source_rows(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    result = _ingest(storage_root, source)
    train = _read(join_uri(result["snapshot_uri"], "train.parquet"))
    validation = _read(join_uri(result["snapshot_uri"], "validation.parquet"))
    train_ids, validation_ids = train.column("row_id").to_pylist(), validation.column("row_id").to_pylist()
    assert sorted(train_ids + validation_ids) == list(range(ROWS))
    assert train_ids == sorted(train_ids)  # source order kept inside each split
    assert train.column_names[-1] == "churned"


def test_second_run_reuses_the_snapshot_and_writes_nothing(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    first = _ingest(storage_root, source)
    listing = storage.list_uris(storage_root)
    manifest_bytes = storage.read_bytes(join_uri(first["snapshot_uri"], "manifest.json"))

    second = _ingest(storage_root, source)

    assert second == {**first, "reused": True}
    assert storage.list_uris(storage_root) == listing
    assert storage.read_bytes(join_uri(first["snapshot_uri"], "manifest.json")) == manifest_bytes


def test_half_written_snapshot_is_written_again(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    first = _ingest(storage_root, source)
    storage.delete(join_uri(first["snapshot_uri"], "manifest.json"))  # as if the writer died before it
    again = _ingest(storage_root, source)
    assert again["reused"] is False
    assert again["snapshot_uri"] == first["snapshot_uri"]
    assert storage.read_manifest(again["snapshot_uri"]) is not None


def test_same_rows_from_csv_parquet_or_a_folder_give_the_same_snapshot(storage_root: str) -> None:
    table = _churn()
    from_parquet = _ingest(storage_root, _put(join_uri(storage_root, "raw", "churn.parquet"), table))
    from_csv = _ingest(storage_root, _put(join_uri(storage_root, "raw", "churn.csv"), table, "csv"))
    folder = join_uri(storage_root, "raw", "parts")
    _put(join_uri(folder, "part-0001.parquet"), table.slice(0, 120))
    _put(join_uri(folder, "part-0002.parquet"), table.slice(120))
    storage.write_bytes(join_uri(folder, "_SUCCESS"), b"")
    from_folder = _ingest(storage_root, folder)
    assert from_csv["snapshot_uri"] == from_folder["snapshot_uri"] == from_parquet["snapshot_uri"]
    assert from_csv["reused"] and from_folder["reused"]


def test_other_split_settings_or_features_make_another_snapshot(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    hashes = {
        _ingest(storage_root, source)["content_hash"],
        _ingest(storage_root, source, seed=8)["content_hash"],
        _ingest(storage_root, source, split_validation=0.3)["content_hash"],
        _ingest(storage_root, source, features=["tenure_months", "plan"])["content_hash"],
    }
    assert len(hashes) == 4


def test_configured_features_are_kept_in_order_then_the_target(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    result = _ingest(storage_root, source, features=["plan", "tenure_months"])
    assert _read(join_uri(result["snapshot_uri"], "train.parquet")).column_names == ["plan", "tenure_months", "churned"]


def test_split_is_deterministic_for_a_seed() -> None:
    table = _churn()
    a_train, a_val = split(table, validation=0.2, seed=5)
    b_train, b_val = split(table, validation=0.2, seed=5)
    _, c_val = split(table, validation=0.2, seed=6)
    assert a_train.equals(b_train) and a_val.equals(b_val)
    assert not a_val.equals(c_val)
    assert (a_train.num_rows, a_val.num_rows) == (160, 40)


def test_a_rare_class_always_reaches_validation_and_each_class_keeps_its_share() -> None:
    labels = ["common"] * 270 + ["uncommon"] * 27 + ["rare"] * 2 + ["single"]
    table = pa.table({"row_id": list(range(300)), "species": labels})
    for seed in range(20):  # a plain permutation leaves the 2 rare rows out of validation in most seeds
        train, validation = split(table, validation=0.2, seed=seed, stratify_by="species")
        counts = {name: validation.column("species").to_pylist().count(name) for name in ("common", "uncommon", "rare", "single")}
        assert counts == {"common": 54, "uncommon": 5, "rare": 1, "single": 0}  # round(n * 0.2), at least 1, at most n - 1
        assert sorted(train.column("row_id").to_pylist() + validation.column("row_id").to_pylist()) == list(range(300))
    again_train, again_validation = split(table, validation=0.2, seed=19, stratify_by="species")
    assert again_train.equals(train) and again_validation.equals(validation)  # seeded: reproducible


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (pa.array([True, False] * 60), "classification"),
        (pa.array(["a", "b", "c"] * 40), "classification"),
        (pa.array(list(range(5)) * 24, pa.int64()), "classification"),  # few whole numbers: class codes
        (pa.array([float(i % 3) for i in range(120)]), "classification"),  # 0.0, 1.0, 2.0 from a CSV
        (pa.array([i * 0.37 for i in range(120)]), "regression"),  # fractional values: a quantity
    ],
)
def test_the_task_kind_is_inferred_from_the_target(storage_root: str, target: pa.Array, expected: str) -> None:
    table = pa.table({"x": [float(i) for i in range(120)], "y": target})
    source = _put(join_uri(storage_root, "raw", "data.parquet"), table)
    result = _ingest(storage_root, source, target="y")
    assert result["task"] == expected
    manifest = storage.read_manifest(result["snapshot_uri"])
    assert manifest["task"] == expected
    assert manifest["split"]["algorithm"] == ("stratified-v1" if expected == "classification" else "permutation-v1")


def test_many_whole_numbers_in_the_target_are_refused_naming_the_column_and_the_key(storage_root: str) -> None:
    table = pa.table({"x": [float(i) for i in range(200)], "progression": [25 + (i * 7) % 300 for i in range(200)]})
    source = _put(join_uri(storage_root, "raw", "diabetes.parquet"), table)
    with pytest.raises(SchemaViolation) as caught:
        _ingest(storage_root, source, target="progression")
    assert caught.value.column == "progression"
    assert str(caught.value) == (
        "column 'progression': the target holds 200 distinct whole numbers (25 to 322): a quantity or 200 classes? "
        "Set train.task: regression or train.task: classification"
    )
    _assert_nothing_written(storage_root)
    declared = _ingest(storage_root, source, target="progression", task="regression")
    assert declared["task"] == "regression" and declared["rows"] == {"train": 160, "validation": 40}


@pytest.mark.parametrize(
    ("target", "task", "rule"),
    [
        (pa.array(["a", "b"] * 60), "regression", "the target is categorical; regression needs a numeric target"),
        (pa.array([i * 0.5 for i in range(120)]), "classification", re.escape("the target has fractional values (e.g. 0.5)")),
    ],
)
def test_a_declared_task_the_target_cannot_have_is_refused(storage_root: str, target: pa.Array, task: str, rule: str) -> None:
    source = _put(join_uri(storage_root, "raw", "data.parquet"), pa.table({"x": [float(i) for i in range(120)], "y": target}))
    with pytest.raises(SchemaViolation, match=rule) as caught:
        _ingest(storage_root, source, target="y", task=task)
    assert caught.value.column == "y" and "train.task" in str(caught.value)
    _assert_nothing_written(storage_root)


def test_a_target_of_one_row_per_class_is_refused_as_no_class_can_reach_validation(storage_root: str) -> None:
    table = pa.table({"x": [float(i) for i in range(120)], "customer_id": [f"c{i:04d}" for i in range(120)]})
    source = _put(join_uri(storage_root, "raw", "ids.parquet"), table)
    with pytest.raises(SchemaViolation) as caught:
        _ingest(storage_root, source, target="customer_id")
    assert str(caught.value) == (
        "column 'customer_id': no class of the target has 2 rows or more (120 classes in 120 rows), so none can "
        "reach validation; is it an id column?"
    )
    _assert_nothing_written(storage_root)


# Bad input: the exact message names the column (or source) and the rule; nothing is written.


def _assert_nothing_written(root: str) -> None:
    assert storage.list_uris(join_uri(root, "snapshots")) == []


def test_missing_target_column(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn().drop_columns(["churned"]))
    with pytest.raises(SchemaViolation) as err:
        _ingest(storage_root, source)
    assert str(err.value) == (
        "column 'churned': target column missing (columns: row_id, tenure_months, monthly_charges, "
        "support_calls, total_charges, plan, contract, paperless_billing)"
    )
    assert (err.value.column, isinstance(err.value, JobInputError)) == ("churned", True)
    _assert_nothing_written(storage_root)


def test_missing_feature_column(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn().select(["tenure_months", "churned"]))
    with pytest.raises(SchemaViolation) as err:
        _ingest(storage_root, source, features=["tenure_months", "monthly_charges"])
    assert str(err.value) == "column 'monthly_charges': feature column missing (columns: tenure_months, churned)"
    _assert_nothing_written(storage_root)


def test_column_of_the_wrong_kind(storage_root: str) -> None:
    table = _churn().set_column(2, "monthly_charges", pa.array(["unknown"] + ["12.5"] * (ROWS - 1)))
    source = _put(join_uri(storage_root, "raw", "churn.csv"), table, "csv")
    with pytest.raises(SchemaViolation) as err:
        _ingest(storage_root, source, column_types={"monthly_charges": "numeric"})
    assert str(err.value) == "column 'monthly_charges': expected numeric (column_types), found 'unknown'"
    _assert_nothing_written(storage_root)


def test_column_of_an_unsupported_type(storage_root: str) -> None:
    signup = pa.array([0] * ROWS, pa.timestamp("ms"))
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn().append_column("signup", signup))
    with pytest.raises(SchemaViolation) as err:
        _ingest(storage_root, source)
    assert str(err.value) == "column 'signup': type timestamp[ms] is not supported; expected numeric, bool or categorical string"
    _assert_nothing_written(storage_root)


@pytest.mark.parametrize(
    "bad_target",
    [
        pa.array([float("nan")] + [1.0] * (ROWS - 1)),
        pa.array([None] + [True] * (ROWS - 1), pa.bool_()),
        pa.array([float("inf")] + [0.5] * (ROWS - 1)),
    ],
    ids=["nan", "null", "inf"],
)
def test_nan_null_or_infinity_in_the_target(storage_root: str, bad_target: pa.Array) -> None:
    table = _churn().drop_columns(["churned"]).append_column("churned", bad_target)
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), table)
    with pytest.raises(SchemaViolation) as err:
        _ingest(storage_root, source)
    assert str(err.value) == "column 'churned': target has 1 null, NaN or infinite value(s); it must have none"
    _assert_nothing_written(storage_root)


def test_fewer_rows_than_min_rows(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn(50))
    with pytest.raises(SourceUnusable) as err:
        _ingest(storage_root, source, min_rows=100)
    assert str(err.value) == f"source {source}: has 50 rows, fewer than min_rows=100"
    _assert_nothing_written(storage_root)


def test_zero_byte_file(storage_root: str) -> None:
    source = join_uri(storage_root, "raw", "churn.csv")
    storage.write_bytes(source, b"")
    with pytest.raises(SourceUnusable) as err:
        _ingest(storage_root, source)
    assert str(err.value) == f"source {source}: is empty (0 bytes)"
    _assert_nothing_written(storage_root)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_file_without_rows(storage_root: str, fmt: str) -> None:
    source = _put(join_uri(storage_root, "raw", f"churn.{fmt}"), _churn().slice(0, 0), fmt)
    with pytest.raises(SourceUnusable) as err:
        _ingest(storage_root, source)
    assert str(err.value) == f"source {source}: is empty (0 rows)"
    _assert_nothing_written(storage_root)


def test_missing_source(storage_root: str) -> None:
    source = join_uri(storage_root, "raw", "nothing.parquet")
    with pytest.raises(SourceUnusable) as err:
        _ingest(storage_root, source)
    assert str(err.value) == f"source {source}: does not exist"


def test_folder_without_data_files(storage_root: str) -> None:
    folder = join_uri(storage_root, "raw", "parts")
    storage.write_bytes(join_uri(folder, "_SUCCESS"), b"")
    with pytest.raises(SourceUnusable) as err:
        _ingest(storage_root, folder)
    assert str(err.value) == f"source {folder}: folder holds no parquet files"


def test_folder_files_with_different_schemas(storage_root: str) -> None:
    folder = join_uri(storage_root, "raw", "parts")
    table = _churn()
    _put(join_uri(folder, "a.parquet"), table.slice(0, 100))
    _put(join_uri(folder, "b.parquet"), table.slice(100).drop_columns(["plan"]))
    with pytest.raises(SourceUnusable, match=r"files disagree on the schema: .*b\.parquet differs from .*a\.parquet"):
        _ingest(storage_root, folder)


def test_bad_split_fraction_is_refused_before_reading() -> None:
    with pytest.raises(JobInputError, match=r"split_validation=1.0: must be between 0 and 1, exclusive"):
        ingest(source="file:///nowhere.parquet", target="y", snapshot_root="file:///nowhere", split_validation=1.0)


# As Ray runs it: `python -m airflow_provider_rayops.jobs.ingest` with RAYOPS_JOB_ARGS.


def _run_module(args: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAYOPS_JOB_ARGS": json.dumps(args)}
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_rayops.jobs.ingest"], env=env, capture_output=True, text=True, timeout=120
    )


def test_job_reports_its_result_line(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    proc = _run_module({"source": source, "target": "churned", "snapshot_root": join_uri(storage_root, "snapshots")})
    assert proc.returncode == 0, proc.stderr
    from airflow_provider_rayops.jobs.runtime import parse_result

    result = parse_result(proc.stdout)
    assert result["rows"] == {"train": 160, "validation": 40}
    assert storage.read_manifest(result["snapshot_uri"])["content_hash"] == result["content_hash"]


def test_job_input_error_is_one_line_and_exit_1(storage_root: str) -> None:
    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    proc = _run_module({"source": source, "target": "label", "snapshot_root": join_uri(storage_root, "snapshots")})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "rayops job input error: column 'label': target column missing (columns: row_id, tenure_months, "
        "monthly_charges, support_calls, total_charges, plan, contract, paperless_billing, churned)"
    ]
    _assert_nothing_written(storage_root)


def test_unknown_job_argument_is_an_input_error() -> None:
    from airflow_provider_rayops.jobs.ingest import main

    with pytest.raises(JobInputError, match="job argument 'split' is not known; expected some of column_types, features"):
        main({"source": "file:///x.parquet", "target": "y", "snapshot_root": "file:///s", "split": 0.2})


# -- streaming: the source is read a block at a time, twice, never whole ------------------------


def test_a_csv_column_that_changes_type_after_its_first_block_is_read_as_the_wider_type(storage_root: str, monkeypatch) -> None:
    from airflow_provider_rayops.jobs import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "CSV_BLOCK_BYTES", 4096)  # many blocks in 2000 rows
    rows = 2000
    table = _churn(rows)
    late_fraction = [None] * (rows - 1) + [0.5]  # empty for 1999 rows, then a number with a fraction
    later_text = [str(i) for i in range(rows - 1)] + ["unknown"]  # whole numbers, then text
    table = table.append_column("late_fraction", pa.array(late_fraction, pa.float64()))
    table = table.append_column("later_text", pa.array(later_text))
    source = _put(join_uri(storage_root, "raw", "churn.csv"), table, "csv")
    from_csv = _ingest(storage_root, source)
    manifest = storage.read_manifest(from_csv["snapshot_uri"])
    types = {c["name"]: c["type"] for c in manifest["columns"]}
    assert (types["late_fraction"], types["later_text"], types["tenure_months"]) == ("double", "string", "int64")
    assert manifest["columns"][-3]["nulls"] == rows - 1
    # The same rows from parquet (where the types were never in doubt) are the same snapshot.
    same = _put(
        join_uri(storage_root, "raw", "churn.parquet"),
        pacsv.read_csv(
            io.BytesIO(storage.read_bytes(source)), convert_options=pacsv.ConvertOptions(column_types={"later_text": pa.string()})
        ),
    )
    assert _ingest(storage_root, same)["snapshot_uri"] == from_csv["snapshot_uri"]


def test_a_csv_column_pinned_as_categorical_is_read_as_text(storage_root: str) -> None:
    table = _churn().set_column(3, "plan", pa.array([str(i % 3 + 1) for i in range(ROWS)]))  # plan codes 1, 2, 3
    source = _put(join_uri(storage_root, "raw", "churn.csv"), table, "csv")
    manifest = storage.read_manifest(_ingest(storage_root, source, column_types={"plan": "categorical"})["snapshot_uri"])
    assert manifest["categories"]["plan"] == ["1", "2", "3"]


def test_a_source_that_changes_between_the_two_passes_leaves_no_snapshot(storage_root: str, monkeypatch) -> None:
    from airflow_provider_rayops.jobs import ingest as ingest_module

    source = _put(join_uri(storage_root, "raw", "churn.parquet"), _churn())
    real_batches = ingest_module.SourceReader.batches
    passes = []

    def batches(self, columns):
        passes.append(1)
        for batch in real_batches(self, columns):
            yield batch if len(passes) == 1 else batch.slice(1)  # the second pass sees fewer rows

    monkeypatch.setattr(ingest_module.SourceReader, "batches", batches)
    with pytest.raises(SourceUnusable, match="changed while it was read; run the ingest again"):
        _ingest(storage_root, source)
    _assert_nothing_written(storage_root)


_PEAK_SCRIPT = """
import json, sys
import pyarrow as pa
from airflow_provider_rayops.jobs import ingest as ingest_module
ingest_module.CSV_BLOCK_BYTES = ingest_module.ROW_GROUP_BYTES = 1 << 20
ingest_module.PARQUET_BATCH_ROWS = 8192
result = ingest_module.ingest(source=sys.argv[1], target="churned", snapshot_root=sys.argv[2])
print(json.dumps({"peak": pa.default_memory_pool().max_memory(), "result": result}))
"""


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_source_is_streamed_never_held_whole(tmp_path, fmt: str) -> None:
    """Ingest of a source of 30 MiB in Arrow, with 1 MiB blocks and row groups, peaks at a fraction
    of it in Arrow memory (measured in a process of its own: a pool's peak cannot be reset)."""
    table = _churn(400_000)
    table = table.append_column("notes", pa.array([f"note {i % 1000:04d}" for i in range(table.num_rows)]))
    source = tmp_path / f"churn.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(table, source)
    else:
        pq.write_table(table, source, row_group_size=20_000)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, f"file://{source}", f"file://{tmp_path}/snapshots"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["result"]["rows"]["train"] + measured["result"]["rows"]["validation"] == table.num_rows
    assert table.nbytes > 30 * 2**20
    assert measured["peak"] < table.nbytes / 2, (measured["peak"], table.nbytes)  # whole, it was over table.nbytes
    written = pq.read_table(measured["result"]["snapshot_uri"].removeprefix("file://") + "/train.parquet")
    assert written.num_rows == measured["result"]["rows"]["train"]
    assert written.schema.field("notes").type == pa.string()


def test_csv_files_of_a_folder_may_order_their_columns_differently_but_must_name_the_same(storage_root: str, monkeypatch) -> None:
    from airflow_provider_rayops.jobs import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "CSV_BLOCK_BYTES", 4096)
    folder = join_uri(storage_root, "raw", "parts")
    table = _churn(1000)
    late = pa.array([None] * 999 + ["true"], pa.string())  # empty for 999 rows, then a flag
    table = table.append_column("flag", late)
    _put(join_uri(folder, "_header_only.csv"), table.slice(0, 0), "csv")  # skipped: hidden name
    _put(join_uri(folder, "a.csv"), table.slice(0, 0), "csv")  # a header and no rows: tells no types
    _put(join_uri(folder, "b.csv"), table.slice(0, 500), "csv")
    reordered = table.slice(500).select(list(reversed(table.column_names)))
    _put(join_uri(folder, "c.csv"), reordered, "csv")  # the flag's first value is here, in another column order
    manifest = storage.read_manifest(_ingest(storage_root, folder, format="csv")["snapshot_uri"])
    kinds = {c["name"]: (c["kind"], c["type"]) for c in manifest["columns"]}
    assert kinds["flag"] == ("bool", "bool")
    assert kinds["monthly_charges"] == ("numeric", "double") and manifest["rows"]["total"] == 1000

    _put(join_uri(folder, "d.csv"), table.slice(0, 10).append_column("extra", pa.array(range(10))), "csv")
    with pytest.raises(SourceUnusable, match=r"files disagree on the columns: .*d\.csv and .*a\.csv differ in 'extra'"):
        _ingest(storage_root, folder, format="csv")


def test_a_csv_column_pinned_numeric_takes_fractions_after_whole_numbers(storage_root: str, monkeypatch) -> None:
    from airflow_provider_rayops.jobs import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "CSV_BLOCK_BYTES", 4096)
    table = _churn(2000).append_column("dose", pa.array([str(i % 7) for i in range(1999)] + ["2.5"]))
    source = _put(join_uri(storage_root, "raw", "churn.csv"), table, "csv")
    manifest = storage.read_manifest(_ingest(storage_root, source, column_types={"dose": "numeric"})["snapshot_uri"])
    assert {c["name"]: c["type"] for c in manifest["columns"]}["dose"] == "double"
    bad = _put(join_uri(storage_root, "raw", "bad.csv"), table.set_column(9, "dose", pa.array(["1"] * 1999 + ["maybe"])), "csv")
    with pytest.raises(SchemaViolation, match=r"column 'dose': expected bool \(column_types\), found 'maybe'"):
        _ingest(storage_root, bad, column_types={"dose": "bool"})
