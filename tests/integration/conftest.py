"""tests/integration: the Airflow stack lives as long as this package's tests need it.

Its tests are the only users of `airflow_stack` (tests/fixtures/airflow_stack.py). Session-scoped,
the four idle services went on polling (about 5 CPU-seconds a minute, measured: the scheduler's
loop, the dag-processor's refresh, the triggerer) and holding their memory through every later
directory of the suite on the two cores shared with Ray. Scoped to this package they start at its
first use, as before, and stop after its last test.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.fixtures.airflow_stack import AirflowStack, running_airflow_stack


@pytest.fixture(scope="package")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: pathlib.Path) -> Iterator[AirflowStack]:
    yield from running_airflow_stack(tmp_path_factory, migrated_airflow_db)
