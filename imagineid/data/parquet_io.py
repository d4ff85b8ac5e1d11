"""Parquet I/O shared by every stage: atomic writes and fixed-size vector columns (docs/architecture.md §3)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"


def vector_type(width: int) -> pa.DataType:
    """A `fixed_size_list<float32>[width]` column type."""
    return pa.list_(pa.float32(), width)


def vectors(array: np.ndarray) -> pa.FixedSizeListArray:
    """(N, K) float array → fixed_size_list<float32>[K] column."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


def vector_lists(arrays: list[np.ndarray]) -> pa.ListArray:
    """A list of (T_i, K) arrays → list<fixed_size_list<float32>[K]> (one variable-length sequence per row)."""
    width = arrays[0].shape[1]
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int32)
    flat = vectors(np.concatenate(arrays) if arrays else np.zeros((0, width)))
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def to_numpy_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed_size_list<float32>[K] column → (N, K) float32 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)


def temp_path(path: Path) -> Path:
    """Where a file is written before its atomic rename: hidden, and not ending in the final suffix, so
    neither pyarrow (skips dot-files) nor DuckDB or Polars globs such as `DATA/frames/*.parquet` (which
    match dot-files) read a half-written or crash-left temp. `Store.remove_orphans` deletes them."""
    return path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}.partial")


def write_table_atomic(table: pa.Table, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `table` to `path` through a temp name in the same folder and an atomic rename.

    Readers never see a half-written file; a crash leaves only a `temp_path` file that no reader matches.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta.update({b"imagineid_schema_version": SCHEMA_VERSION.encode()})
    for key, value in (metadata or {}).items():
        meta[key.encode()] = value.encode()
    table = table.replace_schema_metadata(meta)
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write JSON through a temp name and an atomic rename (manifests, configs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "w") as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())  # records and done markers must not be renamed in before their bytes land
    os.replace(tmp, path)
    return path
