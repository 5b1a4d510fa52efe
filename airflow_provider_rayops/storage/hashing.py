"""Content hashes: of bytes, and of an Arrow table's data independent of how it was stored.

`table_content_hash` gives the same hash to the same rows in the same order whether the
table came from CSV or parquet, in one chunk or many, with dictionary-encoded or plain
strings, and whatever schema metadata rode along. Column names, their order and their
(canonical) types are part of the content; so are nulls, told apart from zeros and "".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_TABLE_HASH_VERSION = b"rayops-table-hash-v1"


def content_hash(data: bytes | Iterable[bytes]) -> str:
    """Hex SHA-256 of `data` (or of the concatenation of its chunks)."""
    digest = hashlib.sha256()
    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
        digest.update(chunk)
    return digest.hexdigest()


def table_content_hash(table: pa.Table) -> str:
    """Hex SHA-256 of a table's canonical content (see the module docstring)."""
    import numpy as np

    digest = hashlib.sha256(_TABLE_HASH_VERSION)
    _feed(digest, str(table.num_rows).encode())
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = _canonical_array(column)
        _feed(digest, name.encode())
        _feed(digest, str(array.type).encode())
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        _feed(digest, np.packbits(nulls).tobytes())
        for part in _value_bytes(array):
            _feed(digest, part)
    return digest.hexdigest()


def _feed(digest: hashlib._Hash, part: bytes) -> None:
    # Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
    digest.update(len(part).to_bytes(8, "little"))
    digest.update(part)


def _canonical_array(column: pa.ChunkedArray) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.large_string())
    elif pa.types.is_binary(column.type) or pa.types.is_binary_view(column.type):
        column = column.cast(pa.large_binary())
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _value_bytes(array: pa.Array) -> list[bytes]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if len(array) == 0:
        return []
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        filled = pc.fill_null(array, pa.scalar(b"" if pa.types.is_large_binary(kind) else "", kind))
        _, offsets_buf, data_buf = filled.buffers()
        offsets = np.frombuffer(offsets_buf, dtype="<i8")[filled.offset : filled.offset + len(filled) + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        data = b"" if data_buf is None else data_buf.slice(start, end - start).to_pybytes()
        return [np.diff(offsets).astype("<i8").tobytes(), data]
    if pa.types.is_boolean(kind):
        return [pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(np.bool_).tobytes()]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind):
        values = np.ascontiguousarray(pc.fill_null(array, pa.scalar(0, kind)).to_numpy(zero_copy_only=False))
        if values.dtype.kind == "f":
            values = values.copy()
            values[np.isnan(values)] = np.nan  # one NaN bit pattern
        return [values.tobytes()]
    # Anything else (lists, structs, decimals): Arrow IPC of the array, good enough for
    # columns that ingest never accepts as features anyway.
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([array], names=["c"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return [sink.getvalue().to_pybytes()]
