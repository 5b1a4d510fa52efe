"""One check of a pipeline's monitor: which live rows are new, the drift verdict on them, the report.

No Airflow and no MLflow here (DriftSensor adds them; a Ray job runs the same code):

- The live data is a folder or prefix of parquet or CSV files: the endpoint's inference log
  (`<storage.root>/inference/<pipeline>/`, parts named `<served_at>-v<version>-...`, of which
  only the watched version's count) or `monitor.current`.
- What a check has seen is its watermark, the (modification time, path) of the newest file it
  judged, and the files it judged in the hour before it, kept with the rest of the monitor's state
  in `<storage.root>/monitor/<pipeline>/state.json` (written whole, so a reader never sees half). A
  file after the watermark is new, and so is one of that hour not judged yet (a part that shows up
  late); when the watched version changes, every file of the new one is.
- Rows are counted from parquet footers (CSV: by lines), so waiting for `min_rows` reads no data.
- Each judged check writes `drift.json` (the result, the per-column distributions and the
  check's facts) and `drift.html` (drift/report.py) under `<storage.root>/monitor/<pipeline>/checks/<check id>/`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops import storage
from airflow_provider_rayops.drift.compute import DriftResult

if TYPE_CHECKING:
    from airflow_provider_rayops.storage import S3Settings

STATE_VERSION = 1
LOOKBACK_NS = 3600 * 10**9  # how far before the watermark a late file is still looked for
_LIVE_EXTENSIONS = (".parquet", ".pq", ".csv", ".csv.gz", ".csv.bz2")


def monitor_uri(storage_root: str, pipeline: str) -> str:
    return f"{storage_root.rstrip('/')}/monitor/{pipeline}"


@dataclass(frozen=True)
class LiveFile:
    uri: str
    mtime_ns: int

    @property
    def mark(self) -> tuple[int, str]:
        return (self.mtime_ns, self.uri)


@dataclass
class MonitorState:
    """What the monitor remembers between checks (`state.json`, written whole)."""

    version: str | None = None  # the model version whose live rows are counted
    watermark: tuple[int, str] | None = None  # (mtime_ns, uri) of the newest file judged
    # Files judged within LOOKBACK_NS of the watermark: a part that shows up late with an older
    # modification time (two replicas writing in the same second) is still new.
    recent: list[tuple[int, str]] = field(default_factory=list)
    last_check_at: str | None = None
    last_report_uri: str | None = None
    last_retrain_at: str | None = None  # when the monitor last started a retraining (the cool-down counts from it)
    last_retrain_reasons: list[str] = field(default_factory=list)
    problem_rows: int = 0  # rows that could not be judged: judged again once min_rows more arrive
    pending_job: dict[str, Any] | None = None  # a check running as a Ray job: {submission_id, files, rows}

    @classmethod
    def load(cls, storage_root: str, pipeline: str, *, settings: S3Settings | None = None) -> MonitorState:
        uri = f"{monitor_uri(storage_root, pipeline)}/state.json"
        try:
            raw = json.loads(storage.read_bytes(uri, settings=settings))
        except storage.StorageNotFoundError:
            return cls()
        watermark = raw.get("watermark")
        return cls(
            version=raw.get("version"),
            watermark=(int(watermark[0]), str(watermark[1])) if watermark else None,
            recent=[(int(m), str(u)) for m, u in raw.get("recent") or []],
            last_check_at=raw.get("last_check_at"),
            last_report_uri=raw.get("last_report_uri"),
            last_retrain_at=raw.get("last_retrain_at"),
            last_retrain_reasons=list(raw.get("last_retrain_reasons") or []),
            problem_rows=int(raw.get("problem_rows") or 0),
            pending_job=raw.get("pending_job"),
        )

    def save(self, storage_root: str, pipeline: str, *, settings: S3Settings | None = None) -> None:
        body = {"format_version": STATE_VERSION, **asdict(self)}
        uri = f"{monitor_uri(storage_root, pipeline)}/state.json"
        storage.write_bytes(uri, json.dumps(body, indent=2).encode(), settings=settings)

    def unjudged(self, files: Sequence[LiveFile]) -> list[LiveFile]:
        """The files no check has judged yet."""
        if self.watermark is None:
            return list(files)
        seen = {uri for _, uri in self.recent}
        floor = self.watermark[0] - LOOKBACK_NS
        return [f for f in files if f.mark > self.watermark or (f.mtime_ns > floor and f.uri not in seen)]

    def judged(self, files: Sequence[LiveFile]) -> None:
        """Move the watermark past `files` (a judged check)."""
        if not files:
            return
        marks = [*self.recent, *(f.mark for f in files)]
        self.watermark = max([*marks, *([self.watermark] if self.watermark else [])])
        floor = self.watermark[0] - LOOKBACK_NS
        self.recent = sorted({mark for mark in marks if mark[0] > floor})
        self.problem_rows = 0

    def cooling_down(self, now: dt.datetime, cooldown_s: float) -> str | None:
        """Why a retraining may not start now (the cool-down since the last one), or None."""
        if not self.last_retrain_at:
            return None
        since = (now - dt.datetime.fromisoformat(self.last_retrain_at)).total_seconds()
        if since >= cooldown_s:
            return None
        return f"the monitor started a retraining {since / 60:.0f} min ago ({self.last_retrain_at}); the cool-down is {cooldown_s / 60:.0f} min"


def live_files(uri: str, *, version: str | None = None, settings: S3Settings | None = None) -> list[LiveFile]:
    """The parquet and CSV files under `uri` (a file, or a folder/prefix), oldest first; with
    `version`, only the inference log's parts of that model version."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(uri, settings=settings)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return []
    prefix = uri.rstrip("/")
    if info.type == pafs.FileType.File:
        found = [(uri, info)]
    else:
        listed = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        found = [(f"{prefix}/{i.path[len(path.rstrip('/')) + 1 :]}", i) for i in listed if i.type == pafs.FileType.File]
    files = []
    for file_uri, item in found:
        name = file_uri.rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or not name.lower().endswith(_LIVE_EXTENSIONS):
            continue
        if version is not None and f"-v{version}-" not in name:
            continue
        mtime_ns = int(item.mtime_ns) if item.mtime_ns is not None else 0
        files.append(LiveFile(uri=file_uri, mtime_ns=mtime_ns))
    return sorted(files, key=lambda f: f.mark)


def count_rows(files: Sequence[LiveFile], *, settings: S3Settings | None = None) -> int:
    """Rows of the files, from parquet footers (CSV: lines after the header)."""
    import pyarrow.parquet as pq

    rows = 0
    for file in files:
        fs, path = storage.filesystem(file.uri, settings=settings)
        if file.uri.lower().endswith((".parquet", ".pq")):
            with fs.open_input_file(path) as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
            continue
        compression = "gzip" if file.uri.endswith(".gz") else "bz2" if file.uri.endswith(".bz2") else None
        with fs.open_input_stream(path, compression=compression) as stream:
            lines, last = 0, b"\n"
            while chunk := stream.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            rows += max(lines + (last != b"\n") - 1, 0)
    return rows


def check_id(now: dt.datetime, version: str | None) -> str:
    # To the microsecond: two checks in one second (a retried poke) never share a report folder.
    return now.strftime("%Y%m%dT%H%M%S%fZ") + (f"-v{version}" if version else "")


def write_report(
    result: DriftResult,
    folder_uri: str,
    *,
    title: str,
    details: Mapping[str, Any],
    settings: S3Settings | None = None,
) -> tuple[str, str]:
    """`drift.json` and `drift.html` under `folder_uri`; their URIs."""
    from airflow_provider_rayops.drift.report import render_html

    body = {**result.to_json(), "check": dict(details), "distributions": result.distributions()}
    json_uri, html_uri = f"{folder_uri}/drift.json", f"{folder_uri}/drift.html"
    storage.write_bytes(json_uri, json.dumps(body, indent=2, default=str).encode(), settings=settings)
    storage.write_bytes(html_uri, render_html(result, title=title, details=details).encode(), settings=settings)
    return json_uri, html_uri
