"""Reading of the request body within its size limit.

aiohttp decodes a body sent with ``Content-Encoding: gzip`` or ``deflate``
while it arrives, a bounded amount per received chunk. The relay reads the
decoded bytes, because they are what the sender signed and what consumers
read. The size limit applies to them too. So a small compressed body that
expands past the limit (a decompression bomb) is rejected after at most the
limit plus one decoded chunk. ``br`` and ``zstd`` need optional packages that the
relay does not install, so aiohttp answers them with 400 before the handler
runs. Other encodings are not decoded and the bytes are read as sent.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from relay.errors import BodyIncomplete, BodyMalformed, BodyTooLarge


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """Return the raw body, or raise ``BodyTooLarge`` as soon as it exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is rejected before any byte
    is read; a chunked body is counted while it arrives. The bytes are the
    ones the signature covers and are never re-encoded. Raises
    ``BodyMalformed`` when the chunked framing or the content encoding is
    corrupt, and ``BodyIncomplete`` when the client closes the connection
    before the body is complete.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"Content-Length {declared} exceeds the limit of {max_bytes} bytes")

    chunks: list[bytes] = []
    size = 0
    try:
        # readany() in a loop, as iter_any() does, without an async iterator per request.
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLarge(f"the body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except RequestPayloadError:
        encoding = request.headers.get("Content-Encoding", "identity")
        raise BodyMalformed(
            f"the body's framing or Content-Encoding {encoding[:32]!r} is invalid"
        ) from None
    except ConnectionResetError:
        raise BodyIncomplete(f"the connection closed after {size} bytes of the body") from None
    return b"".join(chunks)
