"""One side of a drift comparison: the files of a parquet or CSV source, their columns, read a few
columns at a time so that no more than the columns being compared is ever in memory.

A CSV source is first copied, one block at a time, into a local parquet file (CSV has no columns
to read alone: without the copy each group of columns would parse the whole text again).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_rayops.jobs.ingest import SourceReader, SourceUnusable, _decoded_type

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from airflow_provider_rayops.storage import S3Settings

ColumnKind = Literal["numeric", "categorical"]
_BATCH_ROWS = 64 * 1024
# More distinct values than this in a categorical column: an id or free text, not a category.
MAX_CATEGORIES = 10_000


class DriftInputError(ValueError):
    """A side of the comparison cannot be read at all (missing, empty, not parquet or CSV)."""


def kind_of(kind: pa.DataType) -> ColumnKind | None:
    """How a column is compared: numbers as numeric, strings and booleans as categories; None for
    what drift is not judged on (times, binary, nested)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "categorical"
    if pa.types.is_boolean(kind):
        return "categorical"
    return None


@dataclass
class DriftSide:
    """The files of one side, all parquet (CSV copied), with their schema and row count."""

    label: str
    files: list[str]
    fs: Any
    schema: pa.Schema
    rows: int
    _spill: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, source: str | Sequence[str], *, label: str | None = None, settings: S3Settings | None = None) -> DriftSide:
        """The side at `source`: a parquet or CSV file, a folder or prefix of them, or a list of
        file URIs (one format, one filesystem)."""
        import pyarrow.parquet as pq

        uris = [source] if isinstance(source, str) else list(source)
        if not uris:
            raise DriftInputError(f"{label or 'source'}: no files given")
        name = label or (uris[0] if len(uris) == 1 else f"{uris[0]} (+{len(uris) - 1} files)")
        readers = [_open_reader(uri, settings) for uri in uris]
        formats = {reader.fmt for reader in readers}
        if len(formats) > 1:
            raise DriftInputError(f"{name}: mixes {' and '.join(sorted(formats))} files; give one format")
        reader = readers[0]
        files = [path for r in readers for path in r.files]
        reader = SourceReader(name, fs=reader.fs, files=files, fmt=reader.fmt)
        if reader.fmt == "csv":
            return _spilled(reader, name)
        import pyarrow as pa

        schemas, rows = [], 0
        for path in files:
            try:
                with reader.fs.open_input_file(path) as handle:
                    metadata = pq.ParquetFile(handle).metadata
            except (OSError, pa.ArrowInvalid) as exc:
                raise DriftInputError(f"{name}: {path} cannot be read as parquet: {str(exc).splitlines()[0]}") from None
            schemas.append(metadata.schema.to_arrow_schema())
            rows += metadata.num_rows
        try:
            # Parts written at different times may type a column differently (a column of nulls,
            # whole numbers beside fractions): read as the type that holds them all.
            schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DriftInputError(f"{name}: the files disagree on a column's type: {str(exc).splitlines()[0]}") from None
        return cls(label=name, files=files, fs=reader.fs, schema=schema, rows=rows)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    def __enter__(self) -> DriftSide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The rows of `columns`, file after file, as the side's (unified) types."""
        import pyarrow.parquet as pq

        for path in self.files:
            with self.fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = [name for name in columns if name in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=present):
                    yield self._conformed(batch, columns)

    def _conformed(self, data: Any, columns: Sequence[str]) -> Any:
        """A batch or table with exactly `columns`, each of the side's type (a column a file lacks: nulls)."""
        import pyarrow as pa

        arrays = []
        for name in columns:
            kind = self.schema.field(name).type
            if name not in data.schema.names:
                arrays.append(pa.nulls(data.num_rows, kind))
                continue
            column = data.column(name)
            arrays.append(column if column.type == kind else column.cast(kind))
        if isinstance(data, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(arrays, names=list(columns))
        return pa.Table.from_arrays(arrays, names=list(columns))

    def numeric(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Each column as float64, nulls, NaN and infinities dropped, sorted.

        Each file's columns are read at once (Arrow decodes them on its threads); the columns are
        then converted and sorted on a thread each (numpy's sort releases the GIL)."""
        import pyarrow.parquet as pq

        chunks: dict[str, list[Any]] = {name: [] for name in columns}
        for path in self.files:
            with self.fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = [name for name in columns if name in parquet.schema_arrow.names]
                table = self._conformed(parquet.read(columns=present, use_threads=True), columns)
            for name in columns:
                chunks[name].extend(table.column(name).chunks)
            del table
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return dict(zip(columns, pool.map(_sorted_finite, (chunks.pop(name) for name in columns)), strict=True))

    def counts(self, columns: Sequence[str], *, at_most: int = MAX_CATEGORIES) -> dict[str, dict[Any, int] | None]:
        """Each column's count per value, nulls left out; strings as themselves, booleans as bool.
        None for a column with more than `at_most` distinct values (an id, free text): counting
        it would hold them all, and its drift means nothing."""
        import pyarrow.compute as pc

        totals: dict[str, dict[Any, int] | None] = {name: {} for name in columns}
        for batch in self.batches(columns):
            for name in columns:
                column = batch.column(name)
                counts = totals[name]
                if counts is None or column.null_count == len(column):
                    continue
                found = pc.value_counts(column)
                if len(counts) + len(found) > at_most and len({*counts, *found.field(0).to_pylist()}) > at_most:
                    totals[name] = None
                    continue
                for value, count in zip(found.field(0).to_pylist(), found.field(1).to_pylist(), strict=True):
                    if value is not None:
                        counts[value] = counts.get(value, 0) + count
        return totals


def _sorted_finite(chunks: list[Any]) -> np.ndarray:
    """Arrow chunks of one numeric column as one sorted float64 array without null, NaN or infinity."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in chunks:
        if chunk.type != pa.float64():
            chunk = pc.cast(chunk, pa.float64())
        values = chunk.to_numpy(zero_copy_only=False)  # nulls become NaN
        finite = np.isfinite(values)
        parts.append(values if finite.all() else values[finite])
    merged = np.concatenate(parts) if len(parts) != 1 else parts[0].copy()  # a zero-copy view is read-only
    merged.sort()
    return merged


def _open_reader(uri: str, settings: S3Settings | None) -> SourceReader:
    from airflow_provider_rayops.storage import StorageError

    if "://" not in uri:  # a plain path, from the shell
        uri = Path(uri).resolve().as_uri()
    try:
        return SourceReader.open(uri, settings=settings)
    except SourceUnusable as exc:
        raise DriftInputError(f"{uri}: {exc.problem}") from None
    except StorageError as exc:
        raise DriftInputError(str(exc)) from None


def _spilled(reader: SourceReader, label: str) -> DriftSide:
    """The CSV at `reader` copied into one local parquet file, block by block; a column whose type
    widens after its first block (see SourceReader.widen) starts the copy over."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    spill = tempfile.TemporaryDirectory(prefix="rayops-drift-")
    path = os.path.join(spill.name, "side.parquet")
    try:
        for _ in range(64):
            schema = reader.schema()
            decoded = pa.schema([pa.field(f.name, _decoded_type(f.type)) for f in schema])
            try:
                rows = 0
                with pq.ParquetWriter(path, decoded) as writer:
                    for batch in reader.batches(decoded.names):
                        columns = [c if c.type == f.type else c.cast(f.type) for c, f in zip(batch.columns, decoded, strict=True)]
                        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=decoded))
                        rows += batch.num_rows
                break
            except pa.ArrowInvalid as exc:
                if reader.widen(exc) is None:
                    raise DriftInputError(f"{label}: {str(exc).splitlines()[0]}") from None
        else:
            raise DriftInputError(f"{label}: column types kept changing while it was read")
    except SourceUnusable as exc:
        spill.cleanup()
        raise DriftInputError(f"{label}: {exc.problem}") from None
    except BaseException:
        spill.cleanup()
        raise
    return DriftSide(label=label, files=[path], fs=pafs.LocalFileSystem(), schema=decoded, rows=rows, _spill=spill)


@contextlib.contextmanager
def open_sides(
    reference: str | Sequence[str], current: str | Sequence[str], *, settings: S3Settings | None = None
) -> Iterator[tuple[DriftSide, DriftSide]]:
    with DriftSide.open(reference, settings=settings) as ref, DriftSide.open(current, settings=settings) as cur:
        yield ref, cur
