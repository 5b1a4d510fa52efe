"""The artifact contract's names: the files of a checkpoint folder, its format version, and the
error for a model or checkpoint folder that breaks the contract (the package docstring says
what each file holds). Imports nothing: every other module of the package reads these.
"""

from __future__ import annotations

ARTIFACT_FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
MODEL_SPEC_FILE = "model.json"
ENCODER_FILE = "encoder.json"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
# Where models logged before the pyfunc (mlflow.pytorch.log_model(extra_files=...)) hold our files.
MLFLOW_EXTRA_FILES_DIR = "extra_files"


class ModelArtifactError(Exception):
    """A model or checkpoint folder does not follow the artifact contract; `where` says which one."""

    def __init__(self, *, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")
