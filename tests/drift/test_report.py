"""The HTML drift report: self-contained, escaped, one histogram per drifted column."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_rayops.drift import compute_drift
from airflow_provider_rayops.drift.report import render_html

HOSTILE = "<script>alert(1)</script>"


def _result(tmp_path):
    rng = np.random.default_rng(0)
    ref = pa.table({"x": rng.normal(0, 1, 3000), HOSTILE: rng.choice(["a", "b"], 3000), "calm": rng.normal(0, 1, 3000)})
    cur = pa.table(
        {
            "x": rng.normal(1, 1, 2000),
            HOSTILE: rng.choice(["a", "b", "<img src=x onerror=alert(1)>"], 2000),
            "calm": rng.normal(0, 1, 2000),
        }
    )
    ref = ref.append_column("prediction", pa.array(rng.choice(["no", "yes"], 3000)))
    cur = cur.append_column("prediction", pa.array(rng.choice(["no", "yes"], 2000)))
    pq.write_table(ref, tmp_path / "r.parquet")
    pq.write_table(cur, tmp_path / "c.parquet")
    return compute_drift(str(tmp_path / "r.parquet"), str(tmp_path / "c.parquet"))


def test_the_report_shows_the_verdict_the_table_and_a_histogram_per_drifted_column(tmp_path):
    result = _result(tmp_path)
    assert set(result.drifted_columns) == {"x", HOSTILE}
    page = render_html(result, title="churn: drift check", details={"model version": "3"})
    assert "Dataset drift. 2 of 3 columns drifted (67%)" in page
    assert page.count("<tr class=") == 4  # three columns and the prediction
    assert page.count("<figure>") == 3  # the two drifted columns and the prediction
    assert "<td>model version</td>" not in page and "<th>model version</th><td>3</td>" in page


def test_the_report_is_self_contained_and_escapes_what_comes_from_the_data(tmp_path):
    page = render_html(_result(tmp_path))
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<[^>]*\s(src|href)=", page)  # no element fetches anything from elsewhere
