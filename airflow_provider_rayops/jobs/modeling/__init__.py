"""Models, features and the model artifact contract shared by train, tune, evaluate and Serve.

What the pieces are:

- `FeatureEncoder` turns snapshot rows into the float32 matrix every rayops model takes:
  numeric columns standardised with the train split's mean and std (nulls become the mean),
  bool columns as 0/1 (null 0), categorical columns one-hot over the manifest's categories
  (null or unseen: all zeros). It also owns the target and the snapshot's task kind.
  Classification: a bool target has classes [False, True], a categorical target the
  manifest's categories, an integer target the sorted values of the train split; a label is
  a class index. Regression: a label is the target standardised by the train split's mean and std.
- `TabularMLP` is the built-in model: encoded features in, one logit per class out (one
  standardised value for regression).
- `load_predictor(model_uri)` gives a `Predictor` (`predict_proba`, `predict`) for a model
  logged by the train job, or for a checkpoint folder.

Artifact contract (version 1)
-----------------------------

A **checkpoint folder** (Ray Train checkpoint under `<run_root>/train/checkpoint_epoch_<NNNNNN>/`,
written by `save_checkpoint`, read by `load_checkpoint`):

    model.json      {"format_version": 1, "format": "state_dict" | "module",
                     "class": "pkg.module:Class", "kwargs": {...}}
                    "state_dict": model.pt is the module's state_dict and the module is
                    rebuilt as Class(**kwargs); "module": model.pt is the whole pickled module.
    model.pt        the weights (never the DDP wrapper: keys have no "module." prefix)
    encoder.json    FeatureEncoder.to_json(): what the model's input columns mean
    state.json      {"epoch": last finished epoch, "history": [per-epoch metrics, oldest
                     first, each with "epoch"], "resumes": [{"epoch", "attempt"}]}
    optimizer.pt    optional: {"optimizer": state_dict, "scaler": state_dict | None}, for resuming

The model's forward takes a float32 tensor (n, encoder.num_features) and returns logits:
(n, num_classes), or (n,) / (n, 1) for one binary logit; for regression (n,) or (n, 1) values
of the standardised target (`encoder.decode_target` gives the target's units).

An **MLflow training run** (one per Airflow task; see jobs/tracking.py) holds:

    params          the loop's params by their YAML names, plus rayops.* run settings
    metrics         every per-epoch metric the loop reported, step = epoch
    tags            rayops.* lineage (snapshot URI and hash, config hash and git commit,
                    dag_id, run_id, try, Ray job id, run key)
    logged model    name "model": an MLflow pyfunc of raw rows (mlflow_model.py says what it
                    holds: the network as torch.export "pt2", encoder.json, the modules it runs
                    as code_paths), with a column signature and raw validation rows as its
                    input example, so `mlflow.pyfunc.load_model(uri).predict(rows)` and
                    `load_predictor(uri)` both work from the model URI alone. Models logged
                    before that (the PyTorch flavour with extra_files/encoder.json) are still read.

The modules: `artifacts` (the contract's file names, format version and `ModelArtifactError`),
`features` (`FeatureEncoder`), `network` (`TabularMLP`), `checkpoints` (`save_checkpoint`,
`load_checkpoint`), `predictor` (`Predictor`, `load_predictor`), and `mlflow_model` (the logged
pyfunc, imported on its own: it imports MLflow). Every public name of the others is also here,
so `modeling.FeatureEncoder` and the like work as before.

Nothing here imports Ray or MLflow at module level (a Serve replica or the evaluate job pays
only for what it calls); torch is imported, every user of this package needs it.
"""

from airflow_provider_rayops.jobs.modeling.artifacts import (
    ARTIFACT_FORMAT_VERSION,
    ENCODER_FILE,
    MLFLOW_EXTRA_FILES_DIR,
    MODEL_FILE,
    MODEL_SPEC_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    ModelArtifactError,
)
from airflow_provider_rayops.jobs.modeling.checkpoints import (
    LoadedCheckpoint,
    ModelSpec,
    copy_checkpoint_files,
    load_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from airflow_provider_rayops.jobs.modeling.features import EncodedColumn, FeatureEncoder, FeatureMismatch, TargetSpec
from airflow_provider_rayops.jobs.modeling.network import TabularMLP
from airflow_provider_rayops.jobs.modeling.predictor import Predictor, load_predictor, probabilities
from airflow_provider_rayops.jobs.runtime import import_object

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "ENCODER_FILE",
    "MLFLOW_EXTRA_FILES_DIR",
    "MODEL_FILE",
    "MODEL_SPEC_FILE",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "EncodedColumn",
    "FeatureEncoder",
    "FeatureMismatch",
    "LoadedCheckpoint",
    "ModelArtifactError",
    "ModelSpec",
    "Predictor",
    "TabularMLP",
    "TargetSpec",
    "copy_checkpoint_files",
    "import_object",
    "load_checkpoint",
    "load_predictor",
    "probabilities",
    "save_checkpoint",
    "unwrap_model",
]
