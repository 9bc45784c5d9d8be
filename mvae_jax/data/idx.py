"""The IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzip-compressed or not.

Header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions,
then each dimension as a big-endian int32; then the values, row-major.
Images are magic 2051 (0x00000803, n x rows x cols), labels 2049 (0x00000801, n).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
import zlib

import numpy as np

_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """The array in an IDX file (``.gz`` or raw, told apart by content); ValueError naming the file if malformed."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (header bytes {raw[:4].hex() or 'missing'})")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: IDX magic number {magic}, expected {expected_magic}: it holds {describe_magic(magic)}, "
            f"where {describe_magic(expected_magic)} are expected"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, but its header {shape} of {dtype} needs {expected}"
            f" ({'truncated' if len(raw) < expected else 'trailing data'})"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_KINDS = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


def describe_magic(magic: int) -> str:
    """What an IDX magic number says, e.g. 3073 -> 'int32 values in 1 dimension', 2051 -> 'uint8 values in 3
    dimensions (images)'."""
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    dtype = np.dtype(_DTYPES[code]).name if code in _DTYPES else f"type-0x{code:02x}"
    kind = f" ({_KINDS[magic]})" if magic in _KINDS else ""
    return f"{dtype} values in {ndim} dimension{'s' if ndim != 1 else ''}{kind}"


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8/int8 array as IDX (gzip if ``compress``, by default when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise ValueError(f"write_idx supports uint8 and int8, got {array.dtype}")
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path
