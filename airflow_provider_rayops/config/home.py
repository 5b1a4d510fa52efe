"""Where rayops keeps what it makes on this machine: `$RAYOPS_HOME` (default `~/.rayops`).

Below it: `ray/` (the embedded head's state and token), `mlflow/` (the embedded tracking store),
`cache/` (parsed pipelines). Imports nothing of Airflow or Ray: jobs, backends and the config
plane all read it.
"""

from __future__ import annotations

import os
from pathlib import Path


def rayops_home() -> Path:
    """$RAYOPS_HOME, or ~/.rayops when it is unset or empty."""
    return Path(os.environ.get("RAYOPS_HOME") or "~/.rayops").expanduser()
