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
        try:
            schema = reader.schema()
            rows = 0
            for path in files:
                with reader.fs.open_input_file(path) as handle:
                    rows += pq.ParquetFile(handle).metadata.num_rows
        except SourceUnusable as exc:
            raise DriftInputError(f"{name}: {exc.problem}") from None
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
        import pyarrow.parquet as pq

        for path in self.files:
            with self.fs.open_input_file(path) as handle:
                yield from pq.ParquetFile(handle).iter_batches(batch_size=_BATCH_ROWS, columns=list(columns))

    def numeric(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Each column as float64, nulls, NaN and infinities dropped, sorted."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        chunks: dict[str, list[pa.Array]] = {name: [] for name in columns}
        for batch in self.batches(columns):
            for name in columns:
                chunks[name].append(batch.column(name))
        out = {}
        for name in columns:
            parts = []
            for chunk in chunks.pop(name):
                values = pc.cast(chunk, pa.float64()).to_numpy(zero_copy_only=False)
                parts.append(values[np.isfinite(values)])
            merged = np.concatenate(parts) if parts else np.empty(0)
            merged.sort()
            out[name] = merged
        return out

    def counts(self, columns: Sequence[str]) -> dict[str, dict[Any, int]]:
        """Each column's count per value, nulls left out; strings as themselves, booleans as bool."""
        import pyarrow.compute as pc

        totals: dict[str, dict[Any, int]] = {name: {} for name in columns}
        for batch in self.batches(columns):
            for name in columns:
                column = batch.column(name)
                if column.null_count == len(column):
                    continue
                found = pc.value_counts(column)
                counts = totals[name]
                for value, count in zip(found.field(0).to_pylist(), found.field(1).to_pylist(), strict=True):
                    if value is not None:
                        counts[value] = counts.get(value, 0) + count
        return totals


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
