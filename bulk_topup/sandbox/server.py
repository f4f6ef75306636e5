"""A small HTTP/1.1 server on asyncio streams, able to drop a connection.

It reads one request at a time per connection, each with a ``Content-Length``
body, and rejects chunked bodies with 501. A connection stays open between
requests unless the client sends ``Connection: close`` or speaks HTTP/1.0. A handler
returns a ``Response``, or ``None`` to close the connection without a response,
which is how the sandbox simulates a network failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from bulk_topup.sandbox.jsonio import encode_json

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Request:
    """An HTTP request; header names are lower case, the path has no query."""

    method: str
    path: str
    version: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    """An HTTP response with a JSON body."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, value: object, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """Return a response whose body is value encoded as JSON."""
    return Response(status=status, body=encode_json(value), headers=headers)


Handler = Callable[[Request], Awaitable[Response | None]]


class HttpError(Exception):
    """A request that cannot be parsed, so the connection closes after the error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpServer:
    """Serves a handler on one address and closes every connection on stop."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host and port (0 for a free one) and return the port."""
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=MAX_HEAD_BYTES
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and cancel every open connection, even one in a delay."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away, so no response is owed.
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending quietly keeps asyncio
            # from logging the cancellation as an error of the callback.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                request = await read_request(reader)
            except HttpError as error:
                logger.warning("Rejected an HTTP request: %s", error.message)
                body = {"result": False, "message": error.message}
                await _write(writer, json_response(error.status, body), close=True)
                return
            if request is None:
                return
            response = await self._call_handler(request)
            if response is None:
                writer.transport.abort()
                return
            close = not is_keep_alive(request)
            await _write(writer, response, close=close)
            if close:
                return

    async def _call_handler(self, request: Request) -> Response | None:
        try:
            return await self._handler(request)
        except Exception:
            # One broken request must not stop the server; the body stays out
            # of the log because it carries the credentials.
            logger.exception("Handler failed on %s %s", request.method, request.path)
            body = {"result": False, "message": "Internal sandbox error"}
            return json_response(500, body)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request, or return None when the client closed cleanly.

    Raises HttpError for a request that breaks the protocol or the size limits.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise HttpError(400, "Incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "Request head exceeds 64 KiB") from None
    method, path, version, headers = _parse_head(head)
    body = await _read_body(reader, headers)

    return Request(
        method=method, path=path, version=version, headers=headers, body=body
    )


def is_keep_alive(request: Request) -> bool:
    """Return whether the connection stays open after the response to request."""
    tokens = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens

    return "close" not in tokens


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text[:-4].split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HttpError(400, "Malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"Unsupported HTTP version {version!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip():
            raise HttpError(400, "Malformed header line")
        headers[name.lower()] = value.strip()
    path = target.split("?", 1)[0]

    return method, path, version, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        raise HttpError(501, "Chunked bodies are not supported: send Content-Length")
    length_text = headers.get("content-length", "0")
    if not (length_text.isascii() and length_text.isdigit()):
        raise HttpError(400, f"Invalid Content-Length {length_text!r}")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, "Request body exceeds 1 MiB")

    return await reader.readexactly(length) if length else b""


async def _write(
    writer: asyncio.StreamWriter, response: Response, *, close: bool
) -> None:
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(response.body)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    writer.write(head + response.body)
    await writer.drain()
