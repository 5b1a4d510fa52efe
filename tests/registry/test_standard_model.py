"""The registered model is a standard MLflow pyfunc of raw rows: it loads and predicts without
rayops, in a fresh virtual environment holding only its own requirements, and `mlflow models
serve` answers the same rows with the same predictions.

Models are tiny real TabularMLPs (tests/fixtures/models.py) logged as the train job logs them.
The champion lives on the session's real MLflow server (S3 artifacts on the local endpoint,
proxied by the server, so the fresh environment needs no S3 client). Every answer is compared
with the checkpoint's own module (not the exported network the model carries).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from airflow_provider_rayops import storage
from airflow_provider_rayops.jobs import modeling, tracking
from airflow_provider_rayops.jobs.modeling import load_predictor
from tests.fixtures.mlflow import tracking_at, wait_until_serving
from tests.fixtures.models import delivery_snapshot, fit_tiny_model, log_as_training_run
from tests.fixtures.network import free_port
from tests.registry.models import log_training, mlflow_registry, registry_snapshot, unique_name

ROWS = 40


def _eager(checkpoint: Path) -> modeling.Predictor:
    """The checkpoint's own module, not the exported network: what the logged model must agree with."""
    loaded = modeling.load_checkpoint(checkpoint)
    return modeling.Predictor(model=loaded.model, encoder=loaded.encoder, source=str(checkpoint))


def _validation_rows(snapshot: dict, drop: str) -> pd.DataFrame:
    """Raw rows as a user has them: the validation split without its target."""
    table = snapshot.get("validation")
    if table is None:
        table = pq.read_table(storage.parse_uri(storage.join_uri(snapshot["snapshot_uri"], "validation.parquet")).path)
    return table.slice(0, ROWS).drop([drop]).to_pandas()


@pytest.fixture(scope="module")
def champion(mlflow_registry, tmp_path_factory) -> dict:
    """A model registered as version 1 of a new name on the server, with the champion alias."""
    import mlflow

    checkpoint = fit_tiny_model(mlflow_registry.snapshot, folder=tmp_path_factory.mktemp("standard") / "ckpt", steps=20)
    name = unique_name("standard")
    with tracking_at(mlflow_registry.tracking_uri):
        model_uri = log_training(mlflow_registry, checkpoint, name=name).model_uri
        version = mlflow.register_model(model_uri, name).version
        mlflow_registry.client().set_registered_model_alias(name, "champion", str(version))
    rows = _validation_rows(mlflow_registry.snapshot, drop="churned")
    expected = _eager(checkpoint)
    return {
        "uri": f"models:/{name}@champion",
        "tracking_uri": mlflow_registry.tracking_uri,
        "rows": rows,
        "prediction": expected.predict(rows).tolist(),
        "probability_True": expected.predict_proba(rows)[:, 1],
    }


def test_the_champion_predicts_raw_rows_with_pyfunc_as_its_own_module_does(champion, tmp_path):
    import mlflow

    with tracking_at(champion["tracking_uri"]):
        answer = mlflow.pyfunc.load_model(champion["uri"]).predict(champion["rows"])
        local = Path(mlflow.artifacts.download_artifacts(champion["uri"], dst_path=str(tmp_path)))
        by_the_pipeline = load_predictor(champion["uri"])  # what evaluate and Serve use
    assert (local / "artifacts" / "model" / "network.pt2").is_file()
    assert list(answer.columns) == ["prediction", "probability_False", "probability_True"]
    assert answer["prediction"].tolist() == champion["prediction"]
    np.testing.assert_allclose(answer["probability_True"], champion["probability_True"], rtol=1e-5)
    np.testing.assert_allclose(answer["probability_False"], 1 - champion["probability_True"], rtol=1e-5)
    assert by_the_pipeline.predict(champion["rows"]).tolist() == champion["prediction"]


def test_bad_rows_are_refused_with_the_column_named(champion):
    import mlflow
    from mlflow.exceptions import MlflowException

    with tracking_at(champion["tracking_uri"]):
        model = mlflow.pyfunc.load_model(champion["uri"])
    with pytest.raises(MlflowException, match=r"missing inputs.*'plan'"):
        model.predict(champion["rows"].drop(columns=["plan"]))
    with pytest.raises(MlflowException, match="monthly_charges"):
        model.predict(champion["rows"].assign(monthly_charges="a lot"))


def test_nulls_where_the_data_had_them_and_a_regression_target(tmp_path):
    """The delivery data has nulls in distance_km (a number) and city (text): the signature takes
    them, and the regression model answers in minutes."""
    import mlflow

    snapshot = delivery_snapshot(tmp_path, rows=800, seed=5)
    checkpoint = fit_tiny_model(snapshot, folder=tmp_path / "ckpt")
    rows = _validation_rows(snapshot, drop="delivery_minutes")
    rows.loc[0, "distance_km"] = None
    rows.loc[1, "city"] = None
    with tracking_at(f"sqlite:///{tmp_path}/mlflow.db"):
        _, uri = log_as_training_run(checkpoint, snapshot, experiment="standard-regression")
        model = mlflow.pyfunc.load_model(uri)
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs["distance_km"] == "double" and inputs["city"] == "string" and inputs["items"] == "long"
    answer = model.predict(rows)
    assert list(answer.columns) == ["prediction"]
    np.testing.assert_allclose(answer["prediction"].to_numpy(), _eager(checkpoint).predict(rows), rtol=1e-5)
    assert np.isfinite(answer["prediction"]).all()


class BranchingMLP(torch.nn.Module):
    """The built-in network behind a branch on the data: torch.export cannot trace it."""

    def __init__(self, num_features: int, num_outputs: int) -> None:
        super().__init__()
        self.inner = modeling.TabularMLP(num_features=num_features, num_outputs=num_outputs, hidden_sizes=[8], dropout=0.0)

    def forward(self, x):
        out = self.inner(x)
        return out if float(x.sum()) > -1e12 else -out


def test_a_network_torch_export_cannot_trace_is_logged_as_its_checkpoint_and_still_predicts(registry_snapshot, tmp_path):
    import mlflow

    encoder = modeling.FeatureEncoder.fit(registry_snapshot["manifest"], registry_snapshot["train"])
    kwargs = {"num_features": encoder.num_features, "num_outputs": encoder.num_outputs}
    spec = modeling.ModelSpec(class_path=f"{__name__}:BranchingMLP", kwargs=kwargs)
    checkpoint = modeling.save_checkpoint(
        tmp_path / "ckpt", model=BranchingMLP(**kwargs).eval(), encoder=encoder, state={"epoch": 1}, model_spec=spec
    )
    rows = _validation_rows(registry_snapshot, drop="churned")
    with tracking_at(f"sqlite:///{tmp_path}/mlflow.db"):
        _, uri = log_as_training_run(checkpoint, registry_snapshot, experiment="standard-fallback")
        logged = mlflow.get_logged_model(uri.split("/")[-1])
        answer = mlflow.pyfunc.load_model(uri).predict(rows)
    assert logged.tags["rayops.model_format"] == "checkpoint"
    np.testing.assert_allclose(answer["probability_True"], _eager(checkpoint).predict_proba(rows)[:, 1], rtol=1e-5)


def test_a_model_logged_before_the_pyfunc_is_still_read(registry_snapshot, tmp_path):
    """Champions registered before the pyfunc (the PyTorch flavour, encoder in extra_files/) are
    still compared with by evaluate."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    checkpoint = fit_tiny_model(registry_snapshot, folder=tmp_path / "ckpt", steps=20)
    loaded = modeling.load_checkpoint(checkpoint)
    rows = _validation_rows(registry_snapshot, drop="churned")
    example = loaded.encoder.transform(rows.head(5))
    with torch.inference_mode():
        output = loaded.model(torch.from_numpy(example)).numpy()
    with tracking_at(f"sqlite:///{tmp_path}/mlflow.db"):
        experiment_id = tracking.ensure_experiment(tracking.client(), "before-the-pyfunc")  # artifacts beside the db
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.pytorch.log_model(
                loaded.model,
                name="model",
                serialization_format="pt2",
                signature=infer_signature(example, output),
                input_example=example,
                extra_files=[str(checkpoint / modeling.ENCODER_FILE), str(checkpoint / modeling.MODEL_SPEC_FILE)],
            )
        predictor = load_predictor(info.model_uri)
    np.testing.assert_allclose(predictor.predict_proba(rows), _eager(checkpoint).predict_proba(rows), rtol=1e-5)


# -- outside this process: a fresh environment, `mlflow models serve` --------------------------


@pytest.fixture(scope="module")
def fresh_env(champion, tmp_path_factory) -> Path:
    """A virtual environment with only the champion's requirements.txt installed (pip, from its
    cache and the torch wheel on this machine's disk; no bytecode compiled ahead: 25 s instead of
    60); returns its python."""
    import mlflow

    folder = tmp_path_factory.mktemp("fresh-env")
    with tracking_at(champion["tracking_uri"]):
        requirements = mlflow.pyfunc.get_model_dependencies(champion["uri"])
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True, timeout=300)
    python = folder / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", "-r", requirements],
        check=True,
        timeout=900,
    )
    return python


def _clean_env(champion: dict, python: Path) -> dict[str, str]:
    """The environment of a shell in which the fresh venv is activated: nothing of this one's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW", "AIRFLOW", "RAYOPS"))}
    env.update(MLFLOW_TRACKING_URI=champion["tracking_uri"], VIRTUAL_ENV=str(python.parent.parent))
    env["PATH"] = f"{python.parent}:{env.get('PATH', '')}"
    return env


def test_the_champion_loads_in_a_fresh_env_holding_only_its_requirements(champion, fresh_env, tmp_path):
    script = tmp_path / "predict.py"
    script.write_text(
        "import importlib.util, json, sys\n"
        "found = [m for m in ('airflow_provider_rayops', 'airflow', 'ray') if importlib.util.find_spec(m)]\n"
        "import mlflow, pandas as pd\n"
        "rows = pd.read_json(sys.argv[2], orient='split')\n"
        "answer = mlflow.pyfunc.load_model(sys.argv[1]).predict(rows)\n"
        "print(json.dumps({'installed_before': found, 'answer': answer.to_dict(orient='list')}))\n"
    )
    rows_file = tmp_path / "rows.json"
    champion["rows"].to_json(rows_file, orient="split", index=False)
    proc = subprocess.run(
        [str(fresh_env), str(script), champion["uri"], str(rows_file)],
        env=_clean_env(champion, fresh_env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["installed_before"] == []  # no rayops, Airflow or Ray: the model brings what it needs
    assert out["answer"]["prediction"] == champion["prediction"]
    np.testing.assert_allclose(out["answer"]["probability_True"], champion["probability_True"], rtol=1e-5)


def _post(port: int, payload: dict) -> list[dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())["predictions"]


def test_mlflow_models_serve_answers_the_same_rows_with_the_same_predictions(champion, fresh_env, tmp_path):
    """`mlflow models serve` from the fresh environment (its requirements are installed: --env-manager local)."""
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(fresh_env.parent / "mlflow"), "models", "serve", "-m", champion["uri"], "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=_clean_env(champion, fresh_env), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/ping", server, log, timeout=180)
        predictions = _post(port, {"dataframe_split": json.loads(champion["rows"].to_json(orient="split", index=False))})
        # JSON may carry a whole number for a double column: the server reads it by the signature
        whole = champion["rows"].head(1).assign(monthly_charges=80).to_dict(orient="records")
        assert len(_post(port, {"dataframe_records": whole})) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert [p["prediction"] for p in predictions] == champion["prediction"]
    np.testing.assert_allclose([p["probability_True"] for p in predictions], champion["probability_True"], rtol=1e-5)
