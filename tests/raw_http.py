"""A raw HTTP/1.1 client for tests that send bytes no well-behaved client would send."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

# A part of a request: bytes to write, or seconds to wait before the next part.
Part = bytes | float


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lowercase
    body: bytes

    def json(self) -> dict[str, object]:
        document = orjson.loads(self.body)
        assert isinstance(document, dict)
        return document


def build_request(
    path: str,
    body: bytes,
    headers: Iterable[tuple[str, bytes]] = (),
    chunk_bytes: int | None = None,
    content_length: int | None = None,
) -> bytes:
    """Return a POST request; ``chunk_bytes`` sends the body chunked, in chunks of that size.

    ``content_length`` overrides the declared length of a body that is not chunked.
    """
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers]
    if chunk_bytes is None:
        declared = len(body) if content_length is None else content_length
        lines.append(b"Content-Length: %d" % declared)
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    lines.append(b"Transfer-Encoding: chunked")
    framed = b"".join(
        b"%x\r\n%s\r\n"
        % (len(body[start : start + chunk_bytes]), body[start : start + chunk_bytes])
        for start in range(0, len(body), chunk_bytes)
    )
    return b"\r\n".join(lines) + b"\r\n\r\n" + framed + b"0\r\n\r\n"


async def send_raw(
    port: int, parts: Sequence[Part], timeout_s: float = 30.0, hang_up: bool = False
) -> RawResponse | None:
    """Send ``parts`` to 127.0.0.1:``port`` and return the response, or None if there is none.

    The response is read while the parts are written, and writing stops
    once it arrives or the server closes the connection. With ``hang_up`` the client
    closes the connection after the last part instead of reading a response.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sending = asyncio.create_task(_write_parts(writer, parts))
    try:
        async with asyncio.timeout(timeout_s):
            if hang_up:
                await sending
                return None
            # Read while writing, as a client does: an early response ends the sending.
            return await read_response(reader)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()


async def _write_parts(writer: asyncio.StreamWriter, parts: Sequence[Part]) -> None:
    try:
        for part in parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            else:
                writer.write(part)
                await writer.drain()
    except ConnectionError:
        pass


async def read_response(reader: asyncio.StreamReader) -> RawResponse | None:
    """Read one response with a Content-Length, or return None if the connection closes first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(status=int(status_line.split()[1]), headers=headers, body=body)
