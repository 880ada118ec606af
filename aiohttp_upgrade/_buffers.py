"""How the frame parser (``_parser``) reads the bytes of a received chunk.

As Python, the chunk is indexed and sliced as it is. The compiled parser takes
the C twins of ``_cbuffers.pxd`` instead: it reads the chunk's bytes through a
pointer and copies payloads and keys out of it at once, with no index object,
slice or view made per frame.
"""

from __future__ import annotations

__all__ = ["bytearray_at", "bytes_at", "decode_utf8", "readable", "start_of"]

Chunk = bytes | bytearray | memoryview


def readable(data: Chunk) -> Chunk:
    """``data``, in a form whose bytes ``start_of`` can point at and that keeps
    them in place while it is held (compiled: a bytearray is viewed, so that a
    hook cannot resize it under the parser; a non-contiguous view is copied)."""
    return data


def start_of(data: Chunk) -> Chunk:
    """What the bytes of ``data`` are read through: ``data`` itself (compiled:
    a pointer to its first byte; ``data`` must come from :func:`readable`)."""
    return data


def bytearray_at(raw: Chunk, start: int, end: int) -> bytearray:
    """A copy of the bytes from ``start`` to ``end`` of ``raw`` (a ``start_of``)."""
    # From 16 KiB up through a view, as slicing first copies twice (2x slower at
    # 64 KiB); below that the slice is cheaper than making the view.
    if end - start < 16384:
        return bytearray(raw[start:end])
    return bytearray(memoryview(raw)[start:end])


def bytes_at(raw: Chunk, start: int, end: int) -> bytes:
    """The bytes from ``start`` to ``end`` of ``raw`` (a ``start_of``), as bytes."""
    return bytes(raw[start:end])


def decode_utf8(payload: bytes | bytearray) -> str:
    """``payload`` decoded as UTF-8 (UnicodeDecodeError if it is not)."""
    return payload.decode("utf-8")
