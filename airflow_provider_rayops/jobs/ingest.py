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
- The manifest is written last; a snapshot folder without one is absent to every reader.
- Bad input raises `JobInputError` (the job exits 1 with that one line) before anything
  is written. Rules, each naming the column: the target and every configured feature
  exist; their types are numeric, bool or categorical string (or exactly the kind given
  in `column_types`); the target has no null or NaN; the source is not empty and has at
  least `min_rows` rows.

Job arguments (RAYOPS_JOB_ARGS) are `ingest`'s keyword arguments, by name.
"""

from __future__ import annotations

import io
import json
import typing
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_rayops import storage
from airflow_provider_rayops.jobs import contracts
from airflow_provider_rayops.jobs.runtime import JobInputError, run_job

if TYPE_CHECKING:
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

    raw = read_source(source, format=format, settings=settings)
    table, kinds = check_source(
        raw, source=source, target=target, features=features, min_rows=min_rows, column_types=column_types or {}
    )
    feature_names = [name for name in table.column_names if name != target]
    task = task_kind(table.column(target), column=target, kind=kinds[target], declared=task)
    split_settings = {"validation": float(split_validation), "seed": int(seed), "algorithm": _SPLIT_ALGORITHMS[task]}

    data_hash = storage.table_content_hash(table)
    identity = {
        "data_hash": data_hash,
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

    train, validation = split(
        table, validation=split_validation, seed=seed, stratify_by=target if task == "classification" else None
    )
    if validation.num_rows == 0:  # stratified: no class has the two rows it needs to be in both splits
        raise SchemaViolation(
            column=target,
            rule=f"no class of the target has 2 rows or more ({_distinct_count(table, target)} classes in "
            f"{table.num_rows} rows), so none can reach validation; is it an id column?",
        )
    rows = {"train": train.num_rows, "validation": validation.num_rows}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "content_hash": content_hash,
        "data_hash": data_hash,
        "source": source,
        "target": target,
        "task": task,
        "features": feature_names,
        "columns": [
            {
                "name": name,
                "type": str(table.schema.field(name).type),
                "kind": kinds[name],
                "role": "target" if name == target else "feature",
                "nulls": table.column(name).null_count,
            }
            for name in table.column_names
        ],
        "categories": {name: _categories(table.column(name)) for name in table.column_names if kinds[name] == "categorical"},
        "rows": {**rows, "total": table.num_rows},
        "split": {**split_settings, "stratified_by": target if task == "classification" else None},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    storage.write_snapshot(
        snapshot_uri,
        files={TRAIN_FILE: _parquet_bytes(train), VALIDATION_FILE: _parquet_bytes(validation)},
        manifest=manifest,
        settings=settings,
    )
    return _result(snapshot_uri, content_hash, rows, task=task, reused=False)


def read_source(source: str, *, format: str | None = None, settings: S3Settings | None = None) -> pa.Table:
    """The table at `source`: one parquet/CSV file, or every such file under a folder, in path order.

    Files whose name starts with `.` or `_` (`_SUCCESS`, temporary files) are skipped.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(source, settings=settings)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceUnusable(source=source, problem="does not exist")
    fmt: str | None  # a folder's defaults to parquet; a file's may not be known from its name
    if info.type == pafs.FileType.Directory:
        fmt = format or "parquet"
        selector = pafs.FileSelector(path, recursive=True)
        files = sorted(
            f.path
            for f in fs.get_file_info(selector)
            if f.type == pafs.FileType.File and _format_of(f.path) == fmt and not _is_hidden(f.path[len(path) :])
        )
        if not files:
            raise SourceUnusable(source=source, problem=f"folder holds no {fmt} files")
        tables = [_read_file(fs, name, fmt=fmt, source=source) for name in files]
        try:
            return pa.concat_tables(tables)
        except pa.ArrowInvalid as exc:
            odd = next(name for name, t in zip(files, tables, strict=True) if not t.schema.equals(tables[0].schema))
            raise SourceUnusable(source=source, problem=f"files disagree on the schema: {odd} differs from {files[0]}") from exc
    fmt = format or _format_of(path)
    if fmt is None:
        raise SourceUnusable(source=source, problem="cannot tell the format from the name; set format to parquet or csv")
    if info.size == 0:
        raise SourceUnusable(source=source, problem="is empty (0 bytes)")
    return _read_file(fs, path, fmt=fmt, source=source)


def check_source(
    table: pa.Table,
    *,
    source: str,
    target: str,
    features: Sequence[str] | None,
    min_rows: int,
    column_types: Mapping[str, ColumnKind],
) -> tuple[pa.Table, dict[str, ColumnKind]]:
    """The columns ingest keeps (features in order, then the target) and their kinds; raises on any broken rule."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise SourceUnusable(source=source, problem="is empty (0 rows)")
    present = set(table.column_names)
    if target not in present:
        raise SchemaViolation(column=target, rule=f"target column missing (columns: {', '.join(table.column_names)})")
    if features is None:
        features = [name for name in table.column_names if name != target]
    else:
        if target in features:
            raise SchemaViolation(column=target, rule="the target cannot also be a feature")
        missing = [name for name in features if name not in present]
        if missing:
            raise SchemaViolation(column=missing[0], rule=f"feature column missing (columns: {', '.join(table.column_names)})")
        duplicated = sorted({name for name in features if list(features).count(name) > 1})
        if duplicated:
            raise SchemaViolation(column=duplicated[0], rule="feature listed more than once")

    kept = table.select([*features, target])
    kinds: dict[str, ColumnKind] = {}
    columns = []
    for name, column in zip(kept.column_names, kept.columns, strict=True):
        column = _decode(column)
        kind = _kind_of(column.type)
        expected = column_types.get(name)
        if kind is None:
            raise SchemaViolation(
                column=name, rule=f"type {column.type} is not supported; expected numeric, bool or categorical string"
            )
        if expected is not None and kind != expected:
            raise SchemaViolation(column=name, rule=f"expected {expected}, found {column.type}")
        kinds[name] = kind
        columns.append(column)
    kept = pa.table(columns, names=kept.column_names)

    target_column = kept.column(target)
    bad = target_column.null_count
    if kinds[target] == "numeric" and pa.types.is_floating(target_column.type):
        bad += pc.sum(pc.invert(pc.is_finite(target_column))).as_py() or 0
    if bad:
        raise SchemaViolation(column=target, rule=f"target has {bad} null, NaN or infinite value(s); it must have none")
    if kept.num_rows < min_rows:
        raise SourceUnusable(source=source, problem=f"has {kept.num_rows} rows, fewer than min_rows={min_rows}")
    return kept, kinds


def task_kind(values: pa.ChunkedArray, *, column: str, kind: ColumnKind, declared: TaskKind | None) -> TaskKind:
    """The task kind for the target's `values` (see the module docstring); SchemaViolation naming the
    column and `train.task` when the data cannot have the declared kind or does not tell."""
    import numpy as np
    import pyarrow.compute as pc

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
    distinct = pc.count_distinct(values).as_py()
    if distinct <= MAX_INFERRED_CLASSES:
        return "classification"
    raise SchemaViolation(
        column=column,
        rule=f"the target holds {distinct} distinct whole numbers ({int(array.min())} to {int(array.max())}): a quantity or "
        f"{distinct} classes? Set train.task: regression or train.task: classification",
    )


def split(table: pa.Table, *, validation: float, seed: int, stratify_by: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Train and validation tables; both keep source order.

    A seeded permutation picks the validation rows: of the whole table, or of each class of
    `stratify_by` on its own (in sorted class order, one generator), where a class with two rows
    or more gives at least one to each split and a class of one row stays in train.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if stratify_by is None:
        groups = [np.arange(table.num_rows)]
    else:
        _, labels = np.unique(table.column(stratify_by).to_numpy(zero_copy_only=False), return_inverse=True)
        order = np.argsort(labels, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(labels))[:-1])
    picked = []
    for rows in groups:
        n = len(rows)
        n_validation = min(max(round(n * validation), 1), n - 1) if n >= 2 else 0
        picked.append(rng.permutation(rows)[:n_validation])
    validation_rows = np.sort(np.concatenate(picked)).astype(np.int64)
    is_validation = np.zeros(table.num_rows, dtype=bool)
    is_validation[validation_rows] = True
    return table.take(np.nonzero(~is_validation)[0]), table.take(validation_rows)


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


def _distinct_count(table: pa.Table, column: str) -> int:
    import pyarrow.compute as pc

    return int(pc.count_distinct(table.column(column)).as_py())


def _format_of(path: str) -> str | None:
    lowered = path.lower()
    for extension, fmt in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    return None


def _is_hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _read_file(fs: Any, path: str, *, fmt: str, source: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_table(path, filesystem=fs)
        with fs.open_input_stream(path) as stream:
            return pacsv.read_csv(stream)
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        if "Empty CSV file" in message or "size is 0 bytes" in message:
            raise SourceUnusable(source=source, problem=f"{path} is empty (0 bytes)") from exc
        raise SourceUnusable(source=source, problem=f"{path} cannot be read as {fmt}: {message}") from exc


def _decode(column: pa.ChunkedArray) -> pa.ChunkedArray:
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    return column


def _kind_of(kind: pa.DataType) -> ColumnKind | None:
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "numeric"
    if pa.types.is_string(kind):
        return "categorical"
    return None


def _categories(column: pa.ChunkedArray) -> list[str]:
    import pyarrow.compute as pc

    return sorted(value for value in pc.unique(column).to_pylist() if value is not None)


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), buf)
    return buf.getvalue()


if __name__ == "__main__":
    run_job(main)
