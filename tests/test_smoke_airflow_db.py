import pathlib


def test_airflow_db_migrates_into_the_test_home(airflow_db):
    assert (pathlib.Path(airflow_db) / "airflow.db").stat().st_size > 0
