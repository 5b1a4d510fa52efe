"""CanaryHoldTrigger: waits out one canary step's hold in the triggerer, then hands the deploy
operator back the step it was on.

The step travels in the event, not in `defer(kwargs=...)`: `dag.test()` drops those kwargs, and
an event is what every runner passes back. Nothing is polled while holding: the router keeps
the numbers the step is judged by (serving/stats.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CanaryHoldTrigger(BaseTrigger):
    """Fires at `until` (epoch seconds) with `{"state": state}`."""

    def __init__(self, *, until: float, state: Mapping[str, Any]) -> None:
        super().__init__()
        self.until = float(until)
        self.state = dict(state)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"until": self.until, "state": self.state}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(max(0.0, self.until - time.time()))
        yield TriggerEvent({"state": self.state})
