"""Seeded data sets with realistic structure, for the demo and the tests (nothing is downloaded).

`make_churn` models a subscription business: customers on a plan and a contract, paying a
monthly charge, calling support, and churning with a probability that depends on all of
that plus noise, so a model can beat the base rate (~27% churn) but not reach certainty.
`drift` moves the feature distributions (covariate shift) while the churn mechanism stays
the same, which is what the monitor stage is meant to notice.

`make_delivery_times` is a regression set: minutes to deliver an order, from the distance,
the number of items, the city, express service and rush hour, with missing distances and
cities as real order logs have.

    python -m airflow_provider_rayops.jobs.datasets churn --rows 5000 --seed 7 --out file://data/churn.parquet
    python -m airflow_provider_rayops.jobs.datasets delivery --rows 5000 --seed 7 --out file://data/delivery.csv
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

PLANS = ("basic", "standard", "premium")
CONTRACTS = ("month-to-month", "one-year", "two-year")


def make_churn(rows: int, seed: int, drift: float = 0.0) -> pa.Table:
    """A churn table of `rows` customers, the same for the same (`rows`, `seed`, `drift`).

    Columns: tenure_months (int64), monthly_charges (float64), support_calls (int64),
    total_charges (float64), plan (string), contract (string), paperless_billing (bool),
    churned (bool, the target).

    `drift` (>= 0) is the shift in standard deviations of the numeric features (shorter
    tenure, higher charges, more support calls) and moves customers towards premium plans
    and month-to-month contracts; 0 is the reference distribution.
    """
    import numpy as np
    import pyarrow as pa

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    rng = np.random.default_rng(seed)

    plan_weights = np.array([0.45, 0.35, 0.20]) * np.array([1.0, 1.0, 1.0 + 2.0 * drift])
    plan_idx = rng.choice(len(PLANS), size=rows, p=plan_weights / plan_weights.sum())
    contract_weights = np.array([0.50, 0.28, 0.22]) * np.array([1.0 + drift, 1.0, 1.0])
    contract_idx = rng.choice(len(CONTRACTS), size=rows, p=contract_weights / contract_weights.sum())

    # Tenure: many new customers, a long tail of loyal ones; longer contracts stay longer.
    tenure = rng.gamma(shape=1.6, scale=14.0, size=rows) * (1.0 + 0.35 * contract_idx)
    tenure = tenure - drift * 20.0  # ~1 std of tenure per unit of drift
    tenure_months = np.clip(np.rint(tenure), 1, 72).astype(np.int64)

    base_charge = np.array([25.0, 55.0, 95.0])[plan_idx]
    monthly = base_charge + rng.normal(0.0, 8.0, size=rows) + drift * 30.0  # overall std ~30
    monthly_charges = np.round(np.clip(monthly, 10.0, None), 2)

    support_rate = 0.8 + 1.2 * (tenure_months < 6) + 0.4 * (plan_idx == 0)
    support_calls = rng.poisson(support_rate * (1.0 + drift)).astype(np.int64)

    paperless_billing = rng.random(rows) < 0.6
    total_charges = np.round(tenure_months * monthly_charges * rng.normal(1.0, 0.03, size=rows), 2)

    logit = (
        -0.9
        - 0.045 * tenure_months
        + 0.022 * (monthly_charges - 60.0)
        + 0.55 * support_calls
        + np.array([0.9, -0.4, -1.3])[contract_idx]
        + 0.3 * paperless_billing
        + rng.normal(0.0, 0.3, size=rows)
    )
    churned = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))

    return pa.table(
        {
            "tenure_months": pa.array(tenure_months, pa.int64()),
            "monthly_charges": pa.array(monthly_charges, pa.float64()),
            "support_calls": pa.array(support_calls, pa.int64()),
            "total_charges": pa.array(total_charges, pa.float64()),
            "plan": pa.array([PLANS[i] for i in plan_idx], pa.string()),
            "contract": pa.array([CONTRACTS[i] for i in contract_idx], pa.string()),
            "paperless_billing": pa.array(paperless_billing, pa.bool_()),
            "churned": pa.array(churned, pa.bool_()),
        }
    )


CITIES = ("lisbon", "porto", "braga", "faro")


def make_delivery_times(rows: int, seed: int) -> pa.Table:
    """A delivery table of `rows` orders, the same for the same (`rows`, `seed`).

    Columns: distance_km (float64, ~4% null), items (int64), city (string, ~3% null),
    express (bool), rush_hour (bool), delivery_minutes (float64, the target: fractional
    minutes, so a regression target).
    """
    import numpy as np
    import pyarrow as pa

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    distance = np.round(rng.gamma(shape=2.0, scale=3.0, size=rows), 2)
    items = (1 + rng.poisson(2.5, size=rows)).astype(np.int64)
    city_idx = rng.choice(len(CITIES), size=rows, p=[0.4, 0.3, 0.2, 0.1])
    express = rng.random(rows) < 0.25
    rush_hour = rng.random(rows) < 0.3
    minutes = (
        14.0
        + 2.6 * distance
        + 1.5 * items
        - 9.0 * express
        + 8.0 * rush_hour * (1.0 + distance / 10.0)
        + np.array([4.0, 2.0, 0.0, -2.0])[city_idx]
        + rng.normal(0.0, 3.0, size=rows)
    )
    distance_missing = rng.random(rows) < 0.04
    city_missing = rng.random(rows) < 0.03
    return pa.table(
        {
            "distance_km": pa.array(distance, pa.float64(), mask=distance_missing),
            "items": pa.array(items, pa.int64()),
            "city": pa.array([None if gone else CITIES[i] for i, gone in zip(city_idx, city_missing, strict=True)], pa.string()),
            "express": pa.array(express, pa.bool_()),
            "rush_hour": pa.array(rush_hour, pa.bool_()),
            "delivery_minutes": pa.array(np.round(np.clip(minutes, 3.0, None), 1), pa.float64()),
        }
    )


def table_bytes(table: pa.Table, *, fmt: str) -> bytes:
    """`table` encoded as parquet or csv."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
    elif fmt == "csv":
        pacsv.write_csv(table, buf)
    else:
        raise ValueError(f"format must be parquet or csv, got {fmt!r}")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    from airflow_provider_rayops import storage

    parser = argparse.ArgumentParser(prog="python -m airflow_provider_rayops.jobs.datasets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    churn = sub.add_parser("churn", help="customer churn (boolean target 'churned')")
    churn.add_argument("--rows", type=int, required=True)
    churn.add_argument("--seed", type=int, required=True)
    churn.add_argument("--drift", type=float, default=0.0, help="covariate shift in std units (default 0)")
    churn.add_argument("--out", required=True, help="file://... or s3://... ending in .parquet or .csv")
    churn.add_argument("--format", choices=["parquet", "csv"], help="default: from the extension of --out")
    delivery = sub.add_parser("delivery", help="delivery times (numeric target 'delivery_minutes', regression)")
    delivery.add_argument("--rows", type=int, required=True)
    delivery.add_argument("--seed", type=int, required=True)
    delivery.add_argument("--out", required=True, help="file://... or s3://... ending in .parquet or .csv")
    delivery.add_argument("--format", choices=["parquet", "csv"], help="default: from the extension of --out")
    args = parser.parse_args(argv)

    fmt = args.format or ("csv" if args.out.endswith(".csv") else "parquet" if args.out.endswith(".parquet") else None)
    if fmt is None:
        parser.error("--out must end in .parquet or .csv, or give --format")
    try:
        if args.dataset == "churn":
            table = make_churn(args.rows, args.seed, drift=args.drift)
        else:
            table = make_delivery_times(args.rows, args.seed)
        storage.write_bytes(args.out, table_bytes(table, fmt=fmt))
    except (ValueError, storage.StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{storage.resolve_uri(args.out)}: {table.num_rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
