"""The seeded churn data set: reproducible, learnable, and drifting on demand."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.jobs.datasets import make_churn
from airflow_provider_rayops.storage import join_uri


def test_same_seed_same_table_other_seed_other_table() -> None:
    assert make_churn(500, seed=1).equals(make_churn(500, seed=1))
    assert not make_churn(500, seed=1).equals(make_churn(500, seed=2))


def test_columns_and_types() -> None:
    assert make_churn(10, seed=0).schema == pa.schema(
        [
            ("tenure_months", pa.int64()),
            ("monthly_charges", pa.float64()),
            ("support_calls", pa.int64()),
            ("total_charges", pa.float64()),
            ("plan", pa.string()),
            ("contract", pa.string()),
            ("paperless_billing", pa.bool_()),
            ("churned", pa.bool_()),
        ]
    )


def test_churn_depends_on_the_features_so_a_model_can_beat_the_base_rate() -> None:
    table = make_churn(20_000, seed=7)
    churned = table.column("churned").to_numpy(zero_copy_only=False)
    assert 0.15 < churned.mean() < 0.40
    # One feature alone already ranks churners above stayers (AUC of -tenure well over 0.5).
    tenure = table.column("tenure_months").to_numpy()
    ranks = np.argsort(np.argsort(-tenure, kind="stable")) + 1
    n_pos, n_neg = churned.sum(), (~churned).sum()
    auc = (ranks[churned].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert auc > 0.65


def test_drift_shifts_the_features() -> None:
    reference = make_churn(20_000, seed=7)
    drifted = make_churn(20_000, seed=7, drift=0.5)
    for column, direction in [("monthly_charges", 1), ("support_calls", 1), ("tenure_months", -1)]:
        ref = reference.column(column).to_numpy().astype(float)
        cur = drifted.column(column).to_numpy().astype(float)
        assert direction * (cur.mean() - ref.mean()) / ref.std() > 0.3, column
    premium = lambda t: pc.mean(pc.equal(t.column("plan"), "premium").cast(pa.int8())).as_py()  # noqa: E731
    assert premium(drifted) > premium(reference) + 0.05


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rows must be at least 1"):
        make_churn(0, seed=1)
    with pytest.raises(ValueError, match="drift must be >= 0"):
        make_churn(10, seed=1, drift=-1)


@pytest.mark.parametrize("name", ["churn.parquet", "churn.csv"])
def test_cli_writes_the_table_to_a_uri(storage_root: str, name: str) -> None:
    out = join_uri(storage_root, name)
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_rayops.jobs.datasets", "churn", "--rows", "300", "--seed", "4", "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{out}: 300 rows"
    if name.endswith(".parquet"):
        assert pq.read_table(io.BytesIO(storage.read_bytes(out))).equals(make_churn(300, seed=4))
    else:
        assert storage.read_bytes(out).startswith(b'"tenure_months","monthly_charges"')
