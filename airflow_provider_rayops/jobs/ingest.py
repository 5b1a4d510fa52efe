"""The ingest stage (runs inside Ray): source data -> checked, split, immutable snapshot.

Reads a parquet or CSV file, or a folder/prefix of them, at a `file://` or `s3://` URI;
checks it against what the pipeline expects; splits train/validation deterministically;
and writes `<snapshot_root>/<content-hash>/{train.parquet, validation.parquet, manifest.json}`.

- The task kind is the one given (`task`) or inferred from the target: bool or string ->
  classification; numbers with a fractional part -> regression; whole numbers -> classification
  when there are at most MAX_INFERRED_CLASSES distinct values, else ambiguous: refused, naming
  the column and `train.task`. A given kind the target cannot have is refused the same way.
- Classification splits are stratified: each class is split on its own with the seeded
  permutation, so every class with two rows or more reaches both splits (a rare class is never
  left out of validation); a class with one row stays in train. Regression splits the rows as one.
- The content hash covers the canonical data (see `storage.table_content_hash`) plus the
  target, the task kind, the features and the split settings: the same data with the same settings
  always lands on the same snapshot URI, and a second run writes nothing (`reused: true`).
- The source is streamed, never held whole: one pass checks every rule, counts, hashes and keeps
  the target column (the split needs it); a second pass writes both splits a row group at a time
  and hashes again, so a source that changed between the passes is refused, not half-snapshotted.
  Memory is one batch (CSV_BLOCK_BYTES of CSV text, or PARQUET_BATCH_ROWS rows), two row groups
  in waiting (ROW_GROUP_BYTES each), the target column and each categorical column's distinct values.
  A CSV column whose type changes after its first block (empty, then numbers; whole numbers, then
  fractions or text) is read again as the wider type; a column pinned in `column_types` is read
  as its kind, and a value that does not fit is refused naming the column and the value.
- The manifest is written last; a snapshot folder without one is absent to every reader.
- Bad input raises `JobInputError` (the job exits 1 with that one line) before anything
  is written. Rules, each naming the column: the target and every configured feature
  exist; their types are numeric, bool or categorical string (or exactly the kind given
  in `column_types`); the target has no null or NaN; the source is not empty and has at
  least `min_rows` rows.

Job arguments (RAYOPS_JOB_ARGS) are `ingest`'s keyword arguments, by name.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from airflow_provider_rayops import storage
from airflow_provider_rayops.jobs import contracts
from airflow_provider_rayops.jobs.runtime import JobInputError, run_job

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from airflow_provider_rayops.storage import S3Settings

ColumnKind = contracts.ColumnKind
TaskKind = contracts.TaskKind
COLUMN_KINDS: tuple[ColumnKind, ...] = typing.get_args(ColumnKind)
TRAIN_FILE = "train.parquet"
VALIDATION_FILE = "validation.parquet"
MANIFEST_VERSION = 1
# Part of the content hash: bump it when the split or the stored form of a snapshot changes.
_SPLIT_ALGORITHMS: dict[TaskKind, str] = {"classification": "stratified-v1", "regression": "permutation-v1"}
# More distinct whole numbers than this in a target is ambiguous: a count or a price is not a class.
MAX_INFERRED_CLASSES = 20
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv", ".csv.bz2": "csv"}


class SchemaViolation(JobInputError):
    """A column of the source breaks a rule: `column` and `rule` say which."""

    def __init__(self, *, column: str, rule: str) -> None:
        self.column = column
        self.rule = rule
        super().__init__(f"column {column!r}: {rule}")


class SourceUnusable(JobInputError):
    """The source as a whole cannot be used: missing, empty, unreadable or too small."""

    def __init__(self, *, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"source {source}: {problem}")


def ingest(
    *,
    source: str,
    target: str,
    snapshot_root: str,
    features: Sequence[str] | None = None,
    split_validation: float = 0.2,
    seed: int = 7,
    min_rows: int = 100,
    format: Literal["parquet", "csv"] | None = None,
    column_types: Mapping[str, ColumnKind] | None = None,
    task: TaskKind | None = None,
    settings: S3Settings | None = None,
) -> dict[str, Any]:
    """Check `source`, split it and snapshot it under `snapshot_root`; returns where and what.

    `features` None means every column but the target. `column_types` pins the kind of
    some columns (`numeric`, `bool`, `categorical`). `task` None infers classification or
    regression from the target. `settings` defaults to `S3Settings.from_env()` for `s3://` URIs.

    Returns {"snapshot_uri", "content_hash", "rows": {"train", "validation"}, "task", "reused"}.
    """
    if not 0.0 < split_validation < 1.0:
        raise JobInputError(f"split_validation={split_validation}: must be between 0 and 1, exclusive")
    if min_rows < 2:
        raise JobInputError(f"min_rows={min_rows}: must be at least 2 (one row for each split)")
    for column, kind in (column_types or {}).items():
        if kind not in COLUMN_KINDS:
            raise JobInputError(f"column_types[{column!r}]={kind!r}: expected one of {', '.join(COLUMN_KINDS)}")
    source = storage.resolve_uri(source)
    snapshot_root = storage.resolve_uri(snapshot_root)

    reader = SourceReader.open(source, format=format, settings=settings)
    scan = scan_source(reader, target=target, features=features, min_rows=min_rows, column_types=column_types or {})
    feature_names = [name for name in scan.schema.names if name != target]
    task = task_kind(scan.target, column=target, kind=scan.kinds[target], declared=task)
    split_settings = {"validation": float(split_validation), "seed": int(seed), "algorithm": _SPLIT_ALGORITHMS[task]}

    identity = {
        "data_hash": scan.data_hash,
        "target": target,
        "task": task,
        "features": feature_names,
        "split": split_settings,
        "manifest_version": MANIFEST_VERSION,
    }
    content_hash = storage.content_hash(json.dumps(identity, sort_keys=True).encode())
    snapshot_uri = storage.join_uri(snapshot_root, content_hash)

    existing = storage.read_manifest(snapshot_uri, settings=settings)
    if existing is not None and existing.get("content_hash") == content_hash:
        return _result(snapshot_uri, content_hash, existing["rows"], task=task, reused=True)

    is_validation = validation_mask(
        scan.rows, validation=split_validation, seed=seed, labels=scan.target if task == "classification" else None
    )
    if not is_validation.any():  # stratified: no class has the two rows it needs to be in both splits
        raise SchemaViolation(
            column=target,
            rule=f"no class of the target has 2 rows or more ({_distinct_count(scan.target)} classes in "
            f"{scan.rows} rows), so none can reach validation; is it an id column?",
        )
    rows = {"train": scan.rows - int(is_validation.sum()), "validation": int(is_validation.sum())}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "content_hash": content_hash,
        "data_hash": scan.data_hash,
        "source": source,
        "target": target,
        "task": task,
        "features": feature_names,
        "columns": [
            {
                "name": field.name,
                "type": str(field.type),
                "kind": scan.kinds[field.name],
                "role": "target" if field.name == target else "feature",
                "nulls": scan.nulls[field.name],
            }
            for field in scan.schema
        ],
        "categories": {name: sorted(values) for name, values in scan.categories.items()},
        "rows": {**rows, "total": scan.rows},
        "split": {**split_settings, "stratified_by": target if task == "classification" else None},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with storage.SnapshotWriter(snapshot_uri, settings=settings) as snapshot:
        write_splits(reader, scan, is_validation, train=snapshot.open(TRAIN_FILE), validation=snapshot.open(VALIDATION_FILE))
        snapshot.commit(manifest)
    return _result(snapshot_uri, content_hash, rows, task=task, reused=False)


# How much of the source is in memory at once: one batch read (CSV text parsed at a time, or
# parquet rows), and per split the rows waiting to become one parquet row group.
CSV_BLOCK_BYTES = 8 * 2**20
PARQUET_BATCH_ROWS = 64 * 1024
ROW_GROUP_BYTES = 32 * 2**20
# A CSV column whose later rows do not fit the type inferred from its first block is read again
# as a wider type, picked by the value that did not fit: an empty column becomes whole numbers,
# bool or numbers as that value reads; whole numbers become numbers; anything else, text.
_CSV_COLUMN_ERROR = re.compile(r"In CSV column #(?P<index>\d+): .*CSV conversion error to (?P<type>\w+)")
_CSV_VALUE = re.compile(r"invalid value '(?P<value>.*)'$")
_CSV_HEADER_BYTES = 2**20  # a header row must fit in this much of a file's start


class SourceReader:
    """The source's files, read batch by batch in path order (parquet: row batches; CSV: blocks).

    A folder holds every parquet (or, with format csv, CSV) file under it; files whose name starts
    with `.` or `_` (`_SUCCESS`, temporary files) are skipped. The files must agree on their
    columns (parquet: the same schema; CSV: the same names, in any order).
    """

    def __init__(self, source: str, *, fs: Any, files: list[str], fmt: str) -> None:
        self.source = source
        self.fs = fs
        self.files = files
        self.fmt = fmt
        # CSV only: the type each column is read as, fixed before the first pass (and widened),
        # each file's own column order (Arrow's errors count columns in it), the file being read
        # and the kinds pinned by column_types.
        self.csv_types: dict[str, pa.DataType] = {}
        self._headers: dict[str, list[str]] = {}
        self._reading: str | None = None
        self._pinned: Mapping[str, ColumnKind] = {}

    @classmethod
    def open(cls, source: str, *, format: str | None = None, settings: S3Settings | None = None) -> SourceReader:
        import pyarrow.fs as pafs

        fs, path = storage.filesystem(source, settings=settings)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise SourceUnusable(source=source, problem="does not exist")
        if info.type == pafs.FileType.Directory:
            fmt = format or "parquet"  # a folder's defaults to parquet
            selector = pafs.FileSelector(path, recursive=True)
            files = sorted(
                f.path
                for f in fs.get_file_info(selector)
                if f.type == pafs.FileType.File and _format_of(f.path) == fmt and not _is_hidden(f.path[len(path) :])
            )
            if not files:
                raise SourceUnusable(source=source, problem=f"folder holds no {fmt} files")
            return cls(source, fs=fs, files=files, fmt=fmt)
        named = format or _format_of(path)
        if named is None:
            raise SourceUnusable(source=source, problem="cannot tell the format from the name; set format to parquet or csv")
        if info.size == 0:
            raise SourceUnusable(source=source, problem="is empty (0 bytes)")
        return cls(source, fs=fs, files=[path], fmt=named)

    def schema(self, pinned: Mapping[str, ColumnKind] | None = None) -> pa.Schema:
        """The columns and types of the data (CSV: inferred from the first block of the first file
        that has rows, except the `pinned` columns, which are read as their kind)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = self.files[0]
        if self.fmt == "parquet":
            with self._errors(first), self.fs.open_input_file(first) as handle:
                schema = pq.read_schema(handle)
            for other in self.files[1:]:
                with self._errors(other), self.fs.open_input_file(other) as handle:
                    if not pq.read_schema(handle).equals(schema):
                        raise SourceUnusable(
                            source=self.source, problem=f"files disagree on the schema: {other} differs from {first}"
                        )
            return schema
        if not self.csv_types:
            self._pinned = dict(pinned or {})
            inferred = self._infer_csv()
            pinned_types = {"categorical": pa.string(), "numeric": pa.float64(), "bool": pa.bool_()}
            for field in inferred:
                kind = self._pinned.get(field.name)
                fits = kind is None or _kind_of(field.type) == kind
                self.csv_types[field.name] = field.type if fits else pinned_types[kind]  # type: ignore[index]
        return pa.schema([pa.field(name, kind) for name, kind in self.csv_types.items()])

    def batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The rows of `columns` (in that order), batch by batch, file after file."""
        import pyarrow.parquet as pq

        for path in self.files:
            self._reading = path
            with self._errors(path):
                if self.fmt == "parquet":
                    with self.fs.open_input_file(path) as handle:
                        yield from pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(columns))
                    continue
                with self.fs.open_input_stream(path) as stream:
                    yield from self._csv_reader(stream, columns=columns)

    def widen(self, error: Exception) -> str | None:
        """After a CSV conversion error: read the column it names as a wider type (see _CSV_COLUMN_ERROR);
        its name, or None when the error is not that or the column cannot widen. A column pinned in
        column_types that would have to leave its kind is refused, naming the value."""

        match = _CSV_COLUMN_ERROR.search(str(error))
        header = self._headers.get(self._reading or "", [])
        if self.fmt != "csv" or match is None or int(match["index"]) >= len(header):
            return None
        name = header[int(match["index"])]
        found = _CSV_VALUE.search(str(error).splitlines()[0])
        value = found["value"] if found else None
        wider = _wider_csv_type(self.csv_types[name], value)
        if wider is None:
            return None
        pinned = self._pinned.get(name)
        if pinned is not None and _kind_of(wider) != pinned:
            shown = repr(value) if value is not None else "other values"
            raise SchemaViolation(column=name, rule=f"expected {pinned} (column_types), found {shown}") from error
        self.csv_types[name] = wider
        return name

    def _infer_csv(self) -> pa.Schema:
        """Each file's header (they must name the same columns), and the types Arrow infers from the
        first block of the first file with rows (a file of only a header tells nothing)."""
        inferred = None
        for path in self.files:
            with self._errors(path), self.fs.open_input_stream(path) as stream:
                reader = self._csv_reader(stream, columns=None, block_size=_CSV_HEADER_BYTES if inferred else None)
                self._headers[path] = list(reader.schema.names)
                if inferred is None and next(iter(reader), None) is not None:
                    inferred = reader.schema
            first, names = self.files[0], self._headers[path]
            if sorted(names) != sorted(self._headers[first]):
                differ = sorted(set(names) ^ set(self._headers[first]))
                raise SourceUnusable(
                    source=self.source,
                    problem=f"files disagree on the columns: {path} and {first} differ in {', '.join(map(repr, differ))}",
                )
        if inferred is None:  # no file has rows: the scan says so
            with self._errors(self.files[0]), self.fs.open_input_stream(self.files[0]) as stream:
                inferred = self._csv_reader(stream, columns=None).schema
        return inferred

    def _csv_reader(self, stream: Any, *, columns: Sequence[str] | None, block_size: int | None = None) -> Any:
        import pyarrow.csv as pacsv

        # Given an Arrow stream, the CSV reader reads ahead on its own threads as fast as the disk
        # goes: a 26 MB file was all in memory 2 s after opening, whatever the block size. Through
        # a Python file it reads a block when one is wanted (7 MB at most for 1 MB blocks).
        stream = _BlockingStream(stream)
        convert = pacsv.ConvertOptions(
            column_types=self.csv_types or None, include_columns=list(columns) if columns is not None else None
        )
        options = pacsv.ReadOptions(block_size=block_size or CSV_BLOCK_BYTES)
        return pacsv.open_csv(stream, read_options=options, convert_options=convert)

    @contextlib.contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        """Arrow's read errors as SourceUnusable naming the file; CSV conversion errors pass (see widen)."""
        import pyarrow as pa

        try:
            yield
        except KeyError as exc:  # pyarrow.ArrowKeyError: a column this CSV file lacks
            raise SourceUnusable(
                source=self.source, problem=f"files disagree on the columns: {path}: {str(exc).strip(chr(34))}"
            ) from exc
        except pa.ArrowInvalid as exc:
            message = str(exc).splitlines()[0]
            if _CSV_COLUMN_ERROR.search(message):
                raise
            if "Empty CSV file" in message or "size is 0 bytes" in message:
                raise SourceUnusable(source=self.source, problem=f"{path} is empty (0 bytes)") from exc
            raise SourceUnusable(source=self.source, problem=f"{path} cannot be read as {self.fmt}: {message}") from exc


def _wider_csv_type(current: pa.DataType, value: str | None) -> pa.DataType | None:
    """The type to read a CSV column as after `value` did not fit `current`; None when it is text already."""
    import pyarrow as pa

    if pa.types.is_string(current) or pa.types.is_large_string(current):
        return None
    candidates = [pa.int64(), pa.bool_(), pa.float64()] if pa.types.is_null(current) else []
    if pa.types.is_integer(current):
        candidates = [pa.float64()]
    for candidate in candidates:
        if value is not None and _parses_as(value, candidate):
            return candidate
    return pa.string()


def _parses_as(value: str, kind: pa.DataType) -> bool:
    import pyarrow as pa

    try:
        pa.array([value]).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


class _BlockingStream(io.RawIOBase):
    """An Arrow input stream as a Python file: read only when the reader asks (see _csv_reader)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class SourceScan:
    """What one pass over the source learned: the columns ingest keeps (features in order, then
    the target) and their kinds, the rows, the content hash, and the target's values."""

    schema: pa.Schema
    kinds: dict[str, ColumnKind]
    rows: int
    data_hash: str
    target: pa.ChunkedArray
    nulls: dict[str, int]
    categories: dict[str, set[str]]


def scan_source(
    reader: SourceReader,
    *,
    target: str,
    features: Sequence[str] | None,
    min_rows: int,
    column_types: Mapping[str, ColumnKind],
) -> SourceScan:
    """One streamed pass over the source, checking every rule; raises on the first one broken.

    Memory: one batch, the target column, and the distinct values of each categorical column.
    A CSV column whose type changes after its first block is widened and the pass starts over.
    """
    import pyarrow as pa

    schema = reader.schema(pinned=column_types)
    kept = _kept_columns(schema.names, target=target, features=features)
    decoded = pa.schema([pa.field(name, _decoded_type(schema.field(name).type)) for name in kept])
    for _ in range(3 * len(schema) + 1):  # each column widens at most three times: empty, whole numbers, numbers
        try:
            return _scan(reader, decoded, target=target, min_rows=min_rows, column_types=column_types)
        except pa.ArrowInvalid as exc:
            if reader.widen(exc) is None:
                raise SourceUnusable(source=reader.source, problem=str(exc).splitlines()[0]) from exc
            decoded = pa.schema([pa.field(n, _decoded_type(reader.csv_types[n])) for n in kept])
    raise SourceUnusable(source=reader.source, problem="column types kept changing while it was read")


def _kept_columns(present: Sequence[str], *, target: str, features: Sequence[str] | None) -> list[str]:
    if target not in present:
        raise SchemaViolation(column=target, rule=f"target column missing (columns: {', '.join(present)})")
    if features is None:
        return [*(name for name in present if name != target), target]
    if target in features:
        raise SchemaViolation(column=target, rule="the target cannot also be a feature")
    missing = [name for name in features if name not in present]
    if missing:
        raise SchemaViolation(column=missing[0], rule=f"feature column missing (columns: {', '.join(present)})")
    duplicated = sorted({name for name in features if list(features).count(name) > 1})
    if duplicated:
        raise SchemaViolation(column=duplicated[0], rule="feature listed more than once")
    return [*features, target]


def _scan(
    reader: SourceReader, schema: pa.Schema, *, target: str, min_rows: int, column_types: Mapping[str, ColumnKind]
) -> SourceScan:
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds: dict[str, ColumnKind] = {}
    type_problem: SchemaViolation | None = None
    empty_problem: SchemaViolation | None = None
    for field in schema:
        kind = _kind_of(field.type)
        expected = column_types.get(field.name)
        if pa.types.is_null(field.type):  # empty so far: a CSV column may widen on a later row
            empty_problem = empty_problem or SchemaViolation(
                column=field.name, rule="has no values at all (type null); drop it or give it values"
            )
        elif kind is None:
            type_problem = type_problem or SchemaViolation(
                column=field.name, rule=f"type {field.type} is not supported; expected numeric, bool or categorical string"
            )
        elif expected is not None and kind != expected:
            type_problem = type_problem or SchemaViolation(column=field.name, rule=f"expected {expected}, found {field.type}")
        else:
            kinds[field.name] = kind
    hasher = storage.TableHasher(schema)
    nulls = dict.fromkeys(schema.names, 0)
    categories: dict[str, set[str]] = {name: set() for name, kind in kinds.items() if kind == "categorical"}
    target_chunks = []
    bad_targets = 0
    for raw in reader.batches(schema.names):
        if raw.num_rows == 0:
            continue
        if type_problem is not None:  # refused at the first row (an empty source is told as empty)
            raise type_problem
        batch = _conform(raw, schema)
        hasher.update(batch)
        for name, column in zip(schema.names, batch.columns, strict=True):
            nulls[name] += column.null_count
            if name in categories:
                categories[name].update(value for value in pc.unique(column).to_pylist() if value is not None)
        values = batch.column(target)
        target_chunks.append(values)
        bad_targets += values.null_count
        if pa.types.is_floating(values.type):
            bad_targets += pc.sum(pc.invert(pc.is_finite(values))).as_py() or 0
    if hasher.rows == 0:
        raise SourceUnusable(source=reader.source, problem="is empty (0 rows)")
    if empty_problem is not None:
        raise empty_problem
    if bad_targets:
        raise SchemaViolation(column=target, rule=f"target has {bad_targets} null, NaN or infinite value(s); it must have none")
    if hasher.rows < min_rows:
        raise SourceUnusable(source=reader.source, problem=f"has {hasher.rows} rows, fewer than min_rows={min_rows}")
    return SourceScan(
        schema=schema,
        kinds=kinds,
        rows=hasher.rows,
        data_hash=hasher.hexdigest(),
        target=pa.chunked_array(target_chunks, type=schema.field(target).type),
        nulls=nulls,
        categories=categories,
    )


def write_splits(
    reader: SourceReader,
    scan: SourceScan,
    is_validation: Any,
    *,
    train: io.RawIOBase | BinaryIO,
    validation: io.RawIOBase | BinaryIO,
) -> None:
    """Stream the source again into the two splits' parquet files, rows in source order.

    The rows are hashed again as they pass: a source that changed since it was scanned fails
    here, before the snapshot (named by the first pass's hash) is committed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = scan.schema.remove_metadata()
    hasher = storage.TableHasher(schema)
    changed = SourceUnusable(source=reader.source, problem="changed while it was read; run the ingest again")
    with contextlib.ExitStack() as open_writers:
        writers = {}
        for picked, sink in ((False, train), (True, validation)):
            writers[picked] = _RowGroups(pq.ParquetWriter(sink, schema))
            # Closed on the way out, success or not: closed later, by the garbage collector, a writer
            # would write its footer into a file the snapshot has discarded.
            open_writers.push(functools.partial(_close_writer, writers[picked].writer))
        offset = 0
        try:
            for raw in reader.batches(schema.names):
                if raw.num_rows == 0:
                    continue
                batch = _conform(raw, schema)
                hasher.update(batch)
                picked_rows = is_validation[offset : offset + batch.num_rows]
                if len(picked_rows) != batch.num_rows:
                    raise changed
                offset += batch.num_rows
                writers[False].add(batch.filter(~picked_rows))
                writers[True].add(batch.filter(picked_rows))
        except pa.ArrowInvalid as exc:  # a value that fit the types in the first pass no longer does
            raise changed from exc
        if hasher.rows != scan.rows or hasher.hexdigest() != scan.data_hash:
            raise changed
        for writer in writers.values():
            writer.flush()


def _close_writer(writer: Any, kind: Any, exc: BaseException | None, tb: Any) -> bool:
    """Close a parquet writer; when an error is already on its way out, that error is the one told."""
    try:
        writer.close()
    except Exception:
        if exc is None:
            raise
    return False


class _RowGroups:
    """Rows waiting for a parquet file, written a row group at a time (ROW_GROUP_BYTES)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.pending: list[pa.RecordBatch] = []
        self.pending_bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_bytes += batch.nbytes
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            table = pa.Table.from_batches(self.pending)
            self.writer.write_table(table, row_group_size=table.num_rows)
        self.pending, self.pending_bytes = [], 0


def task_kind(values: pa.ChunkedArray, *, column: str, kind: ColumnKind, declared: TaskKind | None) -> TaskKind:
    """The task kind for the target's `values` (see the module docstring); SchemaViolation naming the
    column and `train.task` when the data cannot have the declared kind or does not tell."""
    import numpy as np

    if kind != "numeric":
        if declared == "regression":
            raise SchemaViolation(
                column=column,
                rule=f"the task is regression (train.task, or the metrics and gates it names), but the target is {kind}; "
                "regression needs a numeric target",
            )
        return "classification"
    array = values.to_numpy(zero_copy_only=False)
    fractional = array.dtype.kind == "f" and not bool(np.all(np.mod(array, 1) == 0))
    if fractional:
        if declared == "classification":
            example = float(array[np.mod(array, 1) != 0][0])
            raise SchemaViolation(
                column=column,
                rule=f"the task is classification (train.task, or the metrics and gates it names), but the target has fractional "
                f"values (e.g. {example:g}); "
                "set train.task: regression, or give a target of classes (bool, string or whole numbers)",
            )
        return "regression"
    if declared is not None:
        return declared
    distinct = _distinct_count(values)
    if distinct <= MAX_INFERRED_CLASSES:
        return "classification"
    raise SchemaViolation(
        column=column,
        rule=f"the target holds {distinct} distinct whole numbers ({int(array.min())} to {int(array.max())}): a quantity or "
        f"{distinct} classes? Set train.task: regression or train.task: classification",
    )


def split(table: pa.Table, *, validation: float, seed: int, stratify_by: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Train and validation tables of an in-memory `table`, as ingest splits (see validation_mask)."""
    picked = validation_mask(
        table.num_rows, validation=validation, seed=seed, labels=table.column(stratify_by) if stratify_by else None
    )
    return table.filter(~picked), table.filter(picked)


def validation_mask(rows: int, *, validation: float, seed: int, labels: pa.ChunkedArray | None = None) -> np.ndarray:
    """Which of `rows` rows go to validation (a bool array); the splits keep source order.

    A seeded permutation picks the validation rows: of all rows, or of each class of `labels` on
    its own (in sorted class order, one generator), where a class with two rows or more gives at
    least one to each split and a class of one row stays in train.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(rows)]
    else:
        _, codes = np.unique(labels.to_numpy(zero_copy_only=False), return_inverse=True)
        order = np.argsort(codes, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    picked = []
    for members in groups:
        n = len(members)
        n_validation = min(max(round(n * validation), 1), n - 1) if n >= 2 else 0
        picked.append(rng.permutation(members)[:n_validation])
    is_validation = np.zeros(rows, dtype=bool)
    is_validation[np.concatenate(picked).astype(np.int64)] = True
    return is_validation


def main(args: Mapping[str, Any]) -> dict[str, Any]:
    """Entry point for `run_job`: the arguments of `contracts.IngestArgs`; its `IngestResult`."""
    spec = contracts.IngestArgs.parse(args)
    return contracts.IngestResult.model_validate(ingest(**spec.model_dump())).model_dump(mode="json")


def _result(snapshot_uri: str, content_hash: str, rows: Mapping[str, int], *, task: TaskKind, reused: bool) -> dict[str, Any]:
    return {
        "snapshot_uri": snapshot_uri,
        "content_hash": content_hash,
        "rows": {"train": int(rows["train"]), "validation": int(rows["validation"])},
        "task": task,
        "reused": reused,
    }


def _distinct_count(values: pa.ChunkedArray) -> int:
    import pyarrow.compute as pc

    return int(pc.count_distinct(values).as_py())


def _format_of(path: str) -> str | None:
    lowered = path.lower()
    for extension, fmt in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    return None


def _is_hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _decoded_type(kind: pa.DataType) -> pa.DataType:
    """The type a snapshot stores a column as: dictionaries as their values, every string as string."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    return kind


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with the snapshot's types (`_decoded_type`) and no metadata."""
    import pyarrow as pa

    columns = [
        column if column.type == field.type else column.cast(field.type)
        for column, field in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _kind_of(kind: pa.DataType) -> ColumnKind | None:
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "numeric"
    if pa.types.is_string(kind):
        return "categorical"
    return None


if __name__ == "__main__":
    run_job(main)
