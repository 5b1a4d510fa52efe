"""Which pipeline stages and compute backends this release can run.

A section the schema knows but rayops cannot run yet is refused with a clear message
instead of being wired to a placeholder task. Each issue that builds a stage moves it
from NOT_YET to available here.
"""

from __future__ import annotations

# Section -> the work that brings it.
NOT_YET: dict[str, str] = {}

# Backend -> {section: why}: a stage one backend cannot run yet, refused at load on that backend only.
BACKEND_STAGES_NOT_YET: dict[str, dict[str, str]] = {}

# A stage that only makes sense after another one.
REQUIRES: dict[str, str] = {
    "tune": "train",
    "evaluate": "train",
    "promote": "evaluate",
    "deploy": "promote",
    "monitor": "promote",  # the champion whose data and endpoint are watched
}

# Stages whose jobs record runs in MLflow.
TRACKED: tuple[str, ...] = ("train", "tune", "evaluate", "promote", "deploy")
