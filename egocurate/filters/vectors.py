"""How embedding vectors are stored in `clip_embeddings`: float16 bytes in a binary column.

Delta Lake has no half-precision type, and float32 lists would double the table. Each `vector`
cell holds `dim` little-endian float16 values; these helpers convert whole columns at once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def encode_vectors(vectors: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """(rows, dim) floats as a binary array of float16 bytes; rows flagged in `missing` are null."""
    vectors = np.ascontiguousarray(vectors, dtype="<f2")
    rows, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
    offsets = (np.arange(rows + 1, dtype=np.int32) * dim * 2).astype(np.int32)
    validity = None
    null_count = 0
    if missing is not None and np.any(missing):
        valid = ~np.asarray(missing, dtype=bool)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
        null_count = int((~valid).sum())
    return pa.Array.from_buffers(
        pa.binary(),
        rows,
        [validity, pa.py_buffer(offsets.tobytes()), pa.py_buffer(vectors.tobytes())],
        null_count,
    )


def decode_vectors(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A binary column of float16 vectors (no nulls) as a (rows, dim) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(column) == 0:
        return np.zeros((0, dim or 0), np.float32)
    if column.null_count:
        raise ValueError(f"{column.null_count} vectors are null; filter them out first")
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):  # float lists also work
        import pyarrow.compute as pc

        values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
        return values.reshape(len(column), -1)
    column = column.cast(pa.binary())
    offsets = np.frombuffer(
        column.buffers()[1], dtype=np.int32, count=len(column) + 1, offset=column.offset * 4
    )
    lengths = np.diff(offsets)
    if len(set(lengths.tolist())) != 1:
        raise ValueError(f"vectors differ in length (bytes): {sorted(set(lengths.tolist()))[:5]}")
    width = int(lengths[0]) // 2
    if dim is not None and width != dim:
        raise ValueError(f"vectors have {width} values, expected {dim}")
    data = np.frombuffer(column.buffers()[2], dtype="<f2", count=len(column) * width, offset=int(offsets[0]))
    return data.reshape(len(column), width).astype(np.float32)
