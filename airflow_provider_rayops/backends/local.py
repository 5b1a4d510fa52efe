"""The `local` backend: jobs run on this machine's embedded Ray head (backends/embedded_head.py).

The profile says how big the head is (`num_cpus`, `num_gpus`), where its state folder is
(`state_dir`, default `$RAYOPS_HOME/ray`) and what more of the environment it inherits (`env`).
The head starts when the first job is submitted and is reused by every task after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from airflow_provider_rayops.backends.base import ComputeBackend
from airflow_provider_rayops.backends.embedded_head import EmbeddedHead, default_state_dir
from airflow_provider_rayops.config.compute import LocalProfile
from airflow_provider_rayops.hooks.ray_jobs_api import RayEndpoint


class LocalBackend(ComputeBackend):
    """Submit to the embedded head of the profile's state folder (`head`), started if needed."""

    kind = "local"

    def __init__(self, profile: LocalProfile) -> None:
        state_dir = (Path(profile.state_dir).expanduser() if profile.state_dir else default_state_dir()).absolute()
        # Resolved once, so a trigger running elsewhere (the triggerer) finds the same head.
        self._profile = profile.model_copy(update={"state_dir": str(state_dir)})
        self.head = EmbeddedHead(
            state_dir,
            num_cpus=profile.num_cpus,
            num_gpus=profile.num_gpus,
            object_store_mb=profile.object_store_mb,
            env=profile.env,
        )

    @property
    def profile(self) -> LocalProfile:
        return self._profile

    @property
    def state_dir(self) -> Path:
        return self.head.state_dir

    def endpoint(self) -> RayEndpoint:
        return self.head.endpoint()

    async def aendpoint(self) -> RayEndpoint:
        # Only what head.json records: a trigger never starts a head (nor blocks the event loop).
        return await asyncio.to_thread(self.head.recorded_endpoint)
