"""Content hashes: of bytes, and of an Arrow table's data independent of how it was stored.

`table_content_hash` gives the same hash to the same rows in the same order whether the
table came from CSV or parquet, in one chunk or many, with dictionary-encoded or plain
strings, and whatever schema metadata rode along. Column names, their order and their
(canonical) types are part of the content; so are nulls, told apart from zeros and "".

`TableHasher` computes the same hash batch by batch, for tables that never fit in memory
at once: each column feeds its own digests (nulls, values, and string lengths), which see
one stream of rows whatever the batches were, and the table's hash is taken over those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# v2: per-column streams (batch-independent); v1 hashed each whole column at once.
_TABLE_HASH_VERSION = b"rayops-table-hash-v2"


def content_hash(data: bytes | Iterable[bytes]) -> str:
    """Hex SHA-256 of `data` (or of the concatenation of its chunks)."""
    digest = hashlib.sha256()
    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
        digest.update(chunk)
    return digest.hexdigest()


def table_content_hash(table: pa.Table) -> str:
    """Hex SHA-256 of a table's canonical content (see the module docstring)."""
    hasher = TableHasher(table.schema)
    for batch in table.to_batches():
        hasher.update(batch)
    return hasher.hexdigest()


class TableHasher:
    """`table_content_hash` of the rows fed to `update`, one batch (or table) at a time."""

    def __init__(self, schema: pa.Schema) -> None:
        self.names = list(schema.names)
        self.types = [str(_canonical_type(field.type)) for field in schema]
        self.rows = 0
        # Per column: nulls, values, and for strings the lengths; each one running digest.
        self._streams = [[hashlib.sha256() for _ in range(3)] for _ in self.names]

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if list(batch.schema.names) != self.names:
            raise ValueError(f"batch columns {batch.schema.names} are not the hasher's {self.names}")
        import numpy as np

        self.rows += batch.num_rows
        for streams, column in zip(self._streams, batch.columns, strict=True):
            array = _canonical_array(column)
            if len(array) == 0:
                continue
            streams[0].update(array.is_null().to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
            for stream, part in zip(streams[1:], _value_bytes(array), strict=False):
                stream.update(part)

    def hexdigest(self) -> str:
        digest = hashlib.sha256(_TABLE_HASH_VERSION)
        _feed(digest, str(self.rows).encode())
        for name, kind, streams in zip(self.names, self.types, self._streams, strict=True):
            _feed(digest, name.encode())
            _feed(digest, kind.encode())
            for stream in streams:
                _feed(digest, stream.digest())
        return digest.hexdigest()


def _feed(digest: hashlib._Hash, part: bytes) -> None:
    # Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
    digest.update(len(part).to_bytes(8, "little"))
    digest.update(part)


def _canonical_type(kind: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary(kind) or pa.types.is_binary_view(kind):
        return pa.large_binary()
    return kind


def _canonical_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    column = column.cast(_canonical_type(column.type))
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _value_bytes(array: pa.Array) -> list[bytes]:
    """The value stream(s) of a non-empty canonical array: [values] or, for strings, [data, lengths]."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        filled = pc.fill_null(array, pa.scalar(b"" if pa.types.is_large_binary(kind) else "", kind))
        _, offsets_buf, data_buf = filled.buffers()
        offsets = np.frombuffer(offsets_buf, dtype="<i8")[filled.offset : filled.offset + len(filled) + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        data = b"" if data_buf is None else data_buf.slice(start, end - start).to_pybytes()
        return [data, np.diff(offsets).astype("<i8").tobytes()]
    if pa.types.is_boolean(kind):
        return [pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(np.bool_).tobytes()]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind):
        values = np.ascontiguousarray(pc.fill_null(array, pa.scalar(0, kind)).to_numpy(zero_copy_only=False))
        if values.dtype.kind == "f":
            values = values.copy()
            values[np.isnan(values)] = np.nan  # one NaN bit pattern
        return [values.tobytes()]
    # Anything else (lists, structs, decimals): Arrow IPC of each batch's array, good enough for
    # columns that ingest never accepts as features anyway (this one stream depends on batching).
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([array], names=["c"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return [sink.getvalue().to_pybytes()]
