"""Helpers the latent-action and tokenizer stages share: devices, precision, errors, model ids."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from egocurate.catalog import tables

Device = Literal["auto", "cuda", "cpu"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def pick_device(device: Device) -> str:
    """'cuda' when asked for or when available under 'auto'; 'cpu' otherwise (the CPU fallback)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA device is visible")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(precision: Precision, device: str):
    """Autocast dtype (None = plain fp32): bf16 on GPU under 'auto', fp32 on CPU."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if device.startswith("cuda") else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def gpus_for(device: Device, gpus: float | None) -> float:
    """GPUs a worker asks the engine for: explicit, else 1 when a GPU will be used."""
    if gpus is not None:
        return float(gpus)
    if device == "cpu":
        return 0.0
    if device == "cuda":
        return 1.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def file_model_id(path: str | os.PathLike[str], prefix_bytes: int = 1 << 20) -> str:
    """`name@digest` of a weights file: a hash of its size and first MiB (cheap for multi-GB files)."""
    path = Path(path).expanduser()
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(prefix_bytes))
    return f"{path.name}@{digest.hexdigest()[:12]}"


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:8]


def error_row(row: dict, key: str, kind: str, message: str) -> dict:
    """An output row that the runner will quarantine."""
    return {
        key: row.get(key),
        "video_id": row.get("video_id"),
        "uri": row.get("uri"),
        tables.ERROR_KIND: kind,
        tables.ERROR_MESSAGE: message[:2000],
    }


def classify_decode_error(exc: Exception) -> str:
    """Error kind for an exception raised while decoding a clip."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, FileNotFoundError) or "no such file" in text or "not found" in text:
        return tables.NOT_FOUND
    return tables.DECODE_ERROR


def output_table(
    rows: list[dict], schema: pa.Schema, extra: tuple[tuple[str, pa.DataType], ...] = ()
) -> pa.Table:
    """Rows → Arrow with the table's schema plus the error columns (and `extra` pass-through columns)."""
    fields = list(schema) + [pa.field(n, t) for n, t in extra]
    fields += [pa.field(tables.ERROR_KIND, pa.string()), pa.field(tables.ERROR_MESSAGE, pa.string())]
    full = pa.schema(fields)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in full} for r in rows], schema=full)
