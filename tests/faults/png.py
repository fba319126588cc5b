"""Hand-made PNG files for hostile-input tests: real, valid-by-the-spec files that are tiny on disk but claim or
decode to huge images, plus a zTXt chunk that decompresses to megabytes (PIL refuses chunks over 1 MB)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(
    path: Path, width: int, height: int, bit_depth: int = 1, rows: int | None = None, ztxt_bytes: int = 0
) -> Path:
    """A greyscale PNG of `width` x `height` black pixels; `rows`: encode only that many rows (a header that claims
    more than the data holds); `ztxt_bytes`: add a zTXt chunk that inflates to that many bytes (before IDAT)."""
    row = b"\x00" + bytes((width * bit_depth + 7) // 8)  # filter byte 0 + one row of zeros
    n = height if rows is None else rows
    per_block = max(1, min(n, (1 << 22) // len(row)))  # ~4 MB of rows, deflated once and repeated
    whole, tail = divmod(n, per_block)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; a full flush ends byte-aligned, history reset
    repeated = block.compress(row * per_block) + block.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = last.compress(row * tail) + last.flush()
    adler = 1
    for _ in range(whole):
        adler = zlib.adler32(row * per_block, adler)
    adler = zlib.adler32(row * tail, adler)
    idat = b"\x78\xda" + repeated * whole + final + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if ztxt_bytes:
        chunks.append(_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(ztxt_bytes), 9)))
    chunks += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    return path
