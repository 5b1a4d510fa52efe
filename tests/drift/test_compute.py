"""compute_drift on seeded data with known drift: exactly the drifted columns are flagged, the
preset's tests are picked by size and type, and input that cannot be judged gets a message per column
and no verdict."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from scipy import stats

from airflow_provider_rayops import storage
from airflow_provider_rayops.drift import ColumnRule, DriftInputError, DriftOptions, compute_drift
from tests.fixtures.s3 import s3_endpoint, storage_root

SHIFTED = {"mean_shift", "variance", "new_category"}


def _sides(rows_ref: int, rows_cur: int, *, seed: int = 3, drift: bool = True) -> tuple[pa.Table, pa.Table]:
    """A reference and a current table; with `drift`, one column's mean moves by 0.5 std, one's std
    doubles and one gains a category, while the others keep their distribution."""
    rng = np.random.default_rng(seed)

    def side(rows: int, shifted: bool) -> pa.Table:
        plans = np.array(["basic", "plus", "pro"])
        plan_p = [0.3, 0.35, 0.2, 0.15] if shifted else [0.5, 0.3, 0.2, 0.0]
        plan = rng.choice(np.append(plans, "enterprise"), rows, p=plan_p)
        return pa.table(
            {
                "mean_shift": rng.normal(10.0 + (1.0 if shifted else 0.0), 2.0, rows),
                "variance": rng.normal(0.0, 2.0 if shifted else 1.0, rows),
                "new_category": plan,
                "stable": rng.normal(5.0, 1.0, rows),
                "calls": rng.poisson(2.0, rows),
                "region": rng.choice(["north", "south", "east", "west"], rows),
                "active": rng.random(rows) < 0.3,
            }
        )

    return side(rows_ref, False), side(rows_cur, drift)


def _write(table: pa.Table, uri: str, *, csv: bool = False) -> str:
    buffer = io.BytesIO()
    if csv:
        pacsv.write_csv(table, buffer)
    else:
        pq.write_table(table, buffer)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


@pytest.fixture
def large(tmp_path):
    ref, cur = _sides(5000, 4000)
    return _write(ref, f"file://{tmp_path}/ref.parquet"), _write(cur, f"file://{tmp_path}/cur.parquet"), ref, cur


def test_a_large_reference_flags_exactly_the_shifted_columns(large):
    ref_uri, cur_uri, ref, cur = large
    result = compute_drift(ref_uri, cur_uri)
    assert set(result.drifted_columns) == SHIFTED
    assert {name: c.method for name, c in result.columns.items()} == {
        "mean_shift": "wasserstein",
        "variance": "wasserstein",
        "new_category": "jensenshannon",
        "stable": "wasserstein",
        "calls": "wasserstein",  # a count with more than 5 distinct values is continuous
        "region": "jensenshannon",
        "active": "jensenshannon",  # booleans are categories
    }
    assert result.drift_share == pytest.approx(3 / 7)
    assert result.dataset_drift is False  # 3 of 7 is under the preset's 0.5
    column = result.columns["mean_shift"]
    expected = stats.wasserstein_distance(ref["mean_shift"], cur["mean_shift"]) / np.std(ref["mean_shift"])
    assert column.statistic == pytest.approx(expected, rel=1e-12)
    assert (column.threshold, column.reference_values, column.current_values) == (0.1, 5000, 4000)


def test_the_dataset_drifts_once_the_share_of_drifted_columns_reaches_drift_share(large):
    ref_uri, cur_uri, *_ = large
    result = compute_drift(ref_uri, cur_uri, DriftOptions(drift_share=0.4))
    assert result.dataset_drift is True
    assert result.to_json()["drift_share"] == pytest.approx(3 / 7)


def test_a_small_reference_uses_the_tests_and_flags_the_same_columns(tmp_path):
    ref, cur = _sides(800, 900, seed=5)
    result = compute_drift(_write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet"))
    assert set(result.drifted_columns) == SHIFTED
    methods = {name: c.method for name, c in result.columns.items()}
    assert methods == {
        "mean_shift": "ks",
        "variance": "ks",
        "new_category": "chisquare",
        "stable": "ks",
        "calls": "ks",
        "region": "chisquare",
        "active": "z",
    }
    assert result.columns["stable"].statistic == pytest.approx(stats.ks_2samp(ref["stable"], cur["stable"]).pvalue)


def test_no_drift_flags_nothing(tmp_path):
    ref, cur = _sides(5000, 5000, seed=9, drift=False)
    result = compute_drift(_write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet"))
    assert result.drifted_columns == []
    assert result.dataset_drift is False and not result.problems


def test_a_column_rule_changes_its_test_and_threshold(large):
    ref_uri, cur_uri, *_ = large
    options = DriftOptions(columns={"stable": ColumnRule(method="psi", threshold=0.0), "variance": ColumnRule(threshold=5.0)})
    result = compute_drift(ref_uri, cur_uri, options)
    assert (result.columns["stable"].method, result.columns["stable"].drifted) == ("psi", True)
    assert (result.columns["variance"].threshold, result.columns["variance"].drifted) == (5.0, False)


def test_nulls_and_nans_are_left_out_and_counted(tmp_path):
    ref, cur = _sides(3000, 3000, seed=2)
    values = cur["stable"].to_numpy().copy()
    values[:300] = np.nan
    mask = np.zeros(3000, dtype=bool)
    mask[300:600] = True
    cur = cur.set_column(cur.schema.get_field_index("stable"), "stable", pa.array(values, mask=mask))
    result = compute_drift(_write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet"))
    stable = result.columns["stable"]
    assert (stable.current_values, stable.current_missing) == (2400, 600)
    kept = values[600:]
    expected = stats.wasserstein_distance(ref["stable"], kept) / np.std(ref["stable"])
    assert stable.statistic == pytest.approx(expected, rel=1e-12)


def test_csv_current_data_gives_the_same_result_as_parquet(large, tmp_path):
    ref_uri, cur_uri, _, cur = large
    csv_uri = _write(cur, f"file://{tmp_path}/cur.csv", csv=True)
    from_parquet, from_csv = compute_drift(ref_uri, cur_uri), compute_drift(ref_uri, csv_uri)
    assert from_csv.to_json()["columns"] == from_parquet.to_json()["columns"]


def test_s3_and_file_sources_give_the_same_result(storage_root, large):
    ref_uri, cur_uri, ref, cur = large
    folder = f"{storage_root}/drift"
    result = compute_drift(
        _write(ref, f"{folder}/ref.parquet"),
        [_write(cur.slice(0, 2000), f"{folder}/cur/a.parquet"), _write(cur.slice(2000), f"{folder}/cur/b.parquet")],
    )
    assert result.to_json()["columns"] == compute_drift(ref_uri, cur_uri).to_json()["columns"]
    assert compute_drift(f"{folder}/ref.parquet", f"{folder}/cur/").to_json()["columns"] == result.to_json()["columns"]


def test_numeric_columns_are_read_a_group_at_a_time_within_memory_mb(tmp_path):
    """20 numeric columns of 200,000 rows a side are 64 MB as float64; with memory_mb=8 the peak of
    numpy memory stays near one column of both sides, and every statistic is the same."""
    rng = np.random.default_rng(1)
    rows = 200_000
    ref = pa.table({f"x{i}": rng.normal(0, 1, rows) for i in range(20)})
    cur = pa.table({f"x{i}": rng.normal(0.3 if i >= 10 else 0.0, 1, rows) for i in range(20)})
    ref_uri, cur_uri = _write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet")
    whole = compute_drift(ref_uri, cur_uri)
    tracemalloc.start()
    try:
        grouped = compute_drift(ref_uri, cur_uri, DriftOptions(memory_mb=8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grouped.to_json()["columns"] == whole.to_json()["columns"]
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert set(grouped.drifted_columns) == {f"x{i}" for i in range(10, 20)}


def test_prediction_columns_are_their_own_signal_and_rayops_columns_are_left_out(tmp_path):
    ref, cur = _sides(3000, 3000, seed=4, drift=False)
    rng = np.random.default_rng(0)
    ref = ref.append_column("prediction", pa.array(rng.choice(["no", "yes"], 3000, p=[0.8, 0.2])))
    cur = cur.append_column("prediction", pa.array(rng.choice(["no", "yes"], 3000, p=[0.4, 0.6])))
    cur = cur.append_column("rayops_version", pa.array(["2"] * 3000))
    result = compute_drift(_write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet"))
    assert "prediction" not in result.columns and "rayops_version" not in result.columns
    assert result.prediction["prediction"].drifted and result.prediction_drift is True
    assert result.dataset_drift is False


def test_bonferroni_and_benjamini_hochberg_adjust_the_p_values(tmp_path):
    ref, cur = _sides(600, 600, seed=8)
    ref_uri, cur_uri = _write(ref, f"file://{tmp_path}/r.parquet"), _write(cur, f"file://{tmp_path}/c.parquet")
    plain = compute_drift(ref_uri, cur_uri)
    raw = [plain.columns[name].statistic for name in plain.columns]
    bonferroni = compute_drift(ref_uri, cur_uri, DriftOptions(correction="bonferroni"))
    assert [bonferroni.columns[n].adjusted for n in plain.columns] == pytest.approx([min(1.0, p * len(raw)) for p in raw])
    bh = compute_drift(ref_uri, cur_uri, DriftOptions(correction="benjamini-hochberg"))
    assert [bh.columns[n].adjusted for n in plain.columns] == pytest.approx(list(stats.false_discovery_control(raw)))
    assert set(bonferroni.drifted_columns) <= set(plain.drifted_columns)


def test_input_that_cannot_be_judged_gets_a_message_per_column_and_no_verdict(large, tmp_path):
    ref_uri, _, _, cur = large
    cur = cur.drop_columns(["calls"])
    cur = cur.set_column(cur.schema.get_field_index("stable"), "stable", pa.array(["x"] * cur.num_rows))
    cur = cur.set_column(cur.schema.get_field_index("region"), "region", pa.nulls(cur.num_rows, pa.string()))
    cur = cur.set_column(cur.schema.get_field_index("variance"), "variance", pa.array([np.nan] * cur.num_rows))
    result = compute_drift(ref_uri, _write(cur, f"file://{tmp_path}/bad.parquet"))
    assert sorted(map(str, result.problems)) == [
        "column 'calls': in the reference, missing from the current data",
        "column 'region': no values in the current data: every row is null, NaN or infinite",
        "column 'stable': double in the reference, string in the current data",
        "column 'variance': no values in the current data: every row is null, NaN or infinite",
    ]
    assert result.dataset_drift is False
    assert result.to_json()["problems"]


def test_fewer_rows_than_min_rows_is_not_judged(large):
    ref_uri, cur_uri, *_ = large
    result = compute_drift(ref_uri, cur_uri, DriftOptions(min_rows=4001))
    assert [str(p) for p in result.problems] == [f"the current data ({cur_uri}) has 4000 rows, fewer than min_rows=4001"]
    assert result.columns == {} and result.dataset_drift is False


def test_a_source_that_is_not_there_is_named(tmp_path, large):
    ref_uri, *_ = large
    with pytest.raises(DriftInputError, match=r"nothing\.parquet: does not exist"):
        compute_drift(ref_uri, f"file://{tmp_path}/nothing.parquet")
