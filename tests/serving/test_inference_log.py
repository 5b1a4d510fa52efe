"""The inference log of a served version (no Ray): sampled rows with their predictions, written as
whole parquet parts, bounded, and never a reason for a request to fail."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_rayops.serving.inference_log import SERVED_AT_COLUMN, VERSION_COLUMN, InferenceLog, log_uri

ROWS = pa.table({"tenure_months": pa.array([3, None, 40], pa.int64()), "plan": ["basic", "pro", None]})
PREDICTIONS = [
    {"prediction": True, "probability_False": 0.2, "probability_True": 0.8},
    {"prediction": False, "probability_False": 0.9, "probability_True": 0.1},
    {"prediction": False, "probability_False": 0.6, "probability_True": 0.4},
]


def test_rows_and_their_predictions_are_written_as_one_part_once_due(tmp_path):
    log = InferenceLog(f"file://{tmp_path}/inference/churn", version="4", flush_rows=5, flush_s=3600)
    log.add(ROWS, PREDICTIONS)
    assert not log.due()  # 3 rows, under flush_rows
    log.add(ROWS, PREDICTIONS)
    assert log.due()
    uri = log.flush()
    assert uri is not None and uri.startswith(f"file://{tmp_path}/inference/churn/") and uri.endswith("-000001.parquet")
    (part,) = (tmp_path / "inference" / "churn").iterdir()  # one whole file, no temporary left
    table = pq.read_table(part)
    assert table.column_names == [
        "tenure_months",
        "plan",
        "prediction",
        "probability_False",
        "probability_True",
        VERSION_COLUMN,
        SERVED_AT_COLUMN,
    ]
    assert table.column("tenure_months").to_pylist() == [3, None, 40] * 2  # nulls as served
    assert table.column("prediction").to_pylist() == [True, False, False] * 2
    assert set(table.column(VERSION_COLUMN).to_pylist()) == {"4"}
    assert str(table.schema.field(SERVED_AT_COLUMN).type) == "timestamp[us, tz=UTC]"
    assert log.counts() == {"written_rows": 6, "written_parts": 1, "dropped_rows": 0, "failed_parts": 0, "buffered_rows": 0}
    assert log.flush() is None  # nothing buffered: no empty part


def test_a_sample_keeps_about_its_share_of_rows():
    log = InferenceLog("file:///unused", version="1", sample=0.1, seed=5, max_rows=10**6)
    many = pa.concat_tables([ROWS] * 2000)
    log.add(many, PREDICTIONS * 2000)
    assert 0.08 * 6000 < log.counts()["buffered_rows"] < 0.12 * 6000


def test_a_full_buffer_drops_new_rows_and_counts_them():
    log = InferenceLog("file:///unused", version="1", max_rows=4)
    log.add(ROWS, PREDICTIONS)
    log.add(ROWS, PREDICTIONS)
    assert log.counts()["buffered_rows"] == 3 and log.counts()["dropped_rows"] == 3


def test_a_sink_that_cannot_be_written_loses_the_part_not_the_request(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    log = InferenceLog(f"file://{blocker}/churn", version="1", flush_rows=1)
    log.add(ROWS, PREDICTIONS)
    assert log.flush() is None  # no exception
    assert log.counts()["failed_parts"] == 1 and log.counts()["dropped_rows"] == 3
    fixed = InferenceLog(f"file://{tmp_path}/ok", version="1", flush_rows=1)
    fixed.add(ROWS, PREDICTIONS)
    assert fixed.flush() is not None


def test_the_log_lives_under_the_storage_root_by_pipeline():
    assert log_uri("s3://ml/artifacts/", "churn") == "s3://ml/artifacts/inference/churn"


def test_the_flush_clock_starts_with_the_oldest_row_waiting_not_the_last_part():
    """At low traffic, batches further apart than flush_s still share a part once one is due."""
    log = InferenceLog("file:///unused", version="1", flush_rows=100, flush_s=10.0)
    log._since -= 60  # the last part went out a minute ago
    log.add(ROWS, PREDICTIONS)
    assert not log.due()  # the first row waits from now, not from the last part
