"""The inference log: a sample of the rows a version served, with its predictions, written as
parquet parts under `<storage.root>/inference/<pipeline>/` (the live data the drift check reads).

Each part holds the request columns as the signature typed them, the model's output columns
(`prediction`, and `probability_<class>` for a classifier), `rayops_version` and
`rayops_served_at` (UTC). Parts are named `<served_at>-v<version>-<replica>-<seq>.parquet` and
appear whole (storage writes them atomically), so a reader never sees half a part.

Rows are sampled (`sample`, a share in (0, 1]) into a bounded buffer once a batch has been
answered, never per request and never on the way of a response: the replica writes a part in a
thread once the buffer holds `flush_rows` rows or its oldest row has waited `flush_s`. A buffer that is full drops new
rows and counts them; a part that cannot be written (storage down) is dropped and counted too,
and the next one is tried: losing the log never fails a request.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

VERSION_COLUMN = "rayops_version"
SERVED_AT_COLUMN = "rayops_served_at"
FLUSH_ROWS = 1000
FLUSH_S = 10.0
MAX_BUFFERED_ROWS = 50_000


def log_uri(storage_root: str, pipeline: str) -> str:
    return f"{storage_root.rstrip('/')}/inference/{pipeline}"


class InferenceLog:
    """Sampled served rows of one replica, written as parquet parts under `uri`."""

    def __init__(
        self,
        uri: str,
        *,
        version: str,
        sample: float = 1.0,
        flush_rows: int = FLUSH_ROWS,
        flush_s: float = FLUSH_S,
        max_rows: int = MAX_BUFFERED_ROWS,
        seed: int | None = None,
    ) -> None:
        if not 0 < sample <= 1:
            raise ValueError(f"the inference log's sample is a share in (0, 1], found {sample}")
        self.uri = uri.rstrip("/")
        self.version = version
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.replica = uuid.uuid4().hex[:8]
        self.written_rows = 0
        self.written_parts = 0
        self.dropped_rows = 0
        self.failed_parts = 0
        self._random = random.Random(seed)
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._since = time.monotonic()
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, rows: pa.Table, predictions: Sequence[Mapping[str, Any]]) -> None:
        """Keep a sample of `rows` with their `predictions` (one dict per row, as answered)."""
        import pyarrow as pa

        if rows.num_rows == 0:
            return
        if self.sample < 1:
            keep = [i for i in range(rows.num_rows) if self._random.random() < self.sample]
            if not keep:
                return
            rows = rows.take(pa.array(keep, type=pa.int64()))
            predictions = [predictions[i] for i in keep]
        outputs = pa.Table.from_pylist([dict(p) for p in predictions])
        table = rows
        for name in outputs.column_names:
            column = name if name not in table.column_names else f"{name}_predicted"
            table = table.append_column(column, outputs.column(name))
        now = dt.datetime.now(dt.UTC)
        table = table.append_column(VERSION_COLUMN, pa.array([self.version] * table.num_rows, type=pa.string()))
        table = table.append_column(SERVED_AT_COLUMN, pa.array([now] * table.num_rows, type=pa.timestamp("us", tz="UTC")))
        with self._lock:
            if self._rows + table.num_rows > self.max_rows:
                self.dropped_rows += table.num_rows
                return
            if not self._tables:
                self._since = time.monotonic()  # flush_s counts from the oldest row waiting
            self._tables.append(table)
            self._rows += table.num_rows

    def due(self) -> bool:
        with self._lock:
            return self._rows >= self.flush_rows or (self._rows > 0 and time.monotonic() - self._since >= self.flush_s)

    def flush(self) -> str | None:
        """Write what is buffered as one part; its URI, or None when there was nothing or the
        write failed (counted, logged, and the rows dropped)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from airflow_provider_rayops import storage

        with self._lock:
            tables, self._tables, self._rows = self._tables, [], 0
            self._since = time.monotonic()
            self._seq += 1
            seq = self._seq
        if not tables:
            return None
        rows = sum(t.num_rows for t in tables)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        uri = f"{self.uri}/{stamp}-v{self.version}-{self.replica}-{seq:06d}.parquet"
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            storage.write_bytes(uri, buffer.getvalue())
        except Exception as exc:  # the log is best effort: a request never fails for it
            self.failed_parts += 1
            self.dropped_rows += rows
            logger.warning("inference log: could not write %d row(s) to %s (%s: %s)", rows, uri, type(exc).__name__, exc)
            return None
        self.written_parts += 1
        self.written_rows += rows
        return uri

    def counts(self) -> dict[str, int]:
        return {
            "written_rows": self.written_rows,
            "written_parts": self.written_parts,
            "dropped_rows": self.dropped_rows,
            "failed_parts": self.failed_parts,
            "buffered_rows": self._rows,
        }
