"""Reading of the request body within its size limit."""

from __future__ import annotations

from aiohttp import web

from relay.errors import BodyTooLarge


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """Return the raw body, or raise ``BodyTooLarge`` as soon as it exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is rejected before any byte
    is read; a chunked body is counted while it arrives. The bytes are the
    ones the signature covers and are never re-encoded.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"Content-Length {declared} exceeds the limit of {max_bytes} bytes")

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
