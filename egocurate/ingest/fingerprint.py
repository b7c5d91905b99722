"""Content fingerprints and `video_id`s that do not need a full read of the file.

A fingerprint is the file size plus a BLAKE2b hash of sampled byte ranges (head, tail and evenly
spaced middle chunks). Two copies of the same file get the same id on any machine; reading a whole
2 GB file just to name it would cost more than probing it.
"""

from __future__ import annotations

import hashlib

import fsspec

from egocurate.storage import fsspec_options

HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 20
MIDDLE_CHUNKS = 8
MIDDLE_BYTES = 64 << 10


def sampled_ranges(size: int) -> list[tuple[int, int]]:
    """Byte ranges (start, length) to hash for a file of `size` bytes; small files are read whole."""
    if size <= HEAD_BYTES + TAIL_BYTES + MIDDLE_CHUNKS * MIDDLE_BYTES:
        return [(0, size)]
    ranges = [(0, HEAD_BYTES)]
    span = size - HEAD_BYTES - TAIL_BYTES - MIDDLE_BYTES
    for i in range(MIDDLE_CHUNKS):
        start = HEAD_BYTES + (span * (2 * i + 1)) // (2 * MIDDLE_CHUNKS)
        ranges.append((start, MIDDLE_BYTES))
    ranges.append((size - TAIL_BYTES, TAIL_BYTES))
    return ranges


def fingerprint_file(fh, size: int) -> str:
    """Hex fingerprint of an open binary file of known `size`."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(str(size).encode())
    for start, length in sampled_ranges(size):
        fh.seek(start)
        digest.update(fh.read(length))
    return digest.hexdigest()


def fingerprint_uri(uri: str, storage_options: dict | None = None) -> tuple[int, str]:
    """(size, fingerprint) of the file at `uri` (any fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(storage_options))
    size = int(fs.size(path))
    with fs.open(path, "rb") as fh:
        return size, fingerprint_file(fh, size)


def video_id_for(size: int, fingerprint: str) -> str:
    """Stable 16-hex-digit id of a source video's content."""
    return hashlib.blake2b(f"{size}:{fingerprint}".encode(), digest_size=8).hexdigest()
