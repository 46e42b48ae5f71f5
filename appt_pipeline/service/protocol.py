"""uvicorn's httptools HTTP protocol with the limits it lacks: header size and header / body read time.

uvicorn bounds these only for its h11 protocol (``h11_max_incomplete_event_size``) and has no read
timeouts at all; httptools buffers a header of any size. The intake keeps httptools (about twice h11's
throughput on this machine) and adds, per connection:

* ``max_header_bytes`` (default 64 KiB): request line + headers larger than this → **431**, connection
  closed; the process never buffers more than this plus one socket read (real provider deliveries send
  under 2 KiB of headers);
* ``header_timeout_s`` (default 10 s): from the connection (or the first byte of a request) to the end of
  its headers → **408**, closed — a client that connects and trickles headers (slowloris) is dropped;
* ``body_timeout_s`` (default 30 s): from the end of the headers to the end of the body → **408**, closed.

The idle keep-alive timeout and the connection cap are uvicorn's own settings (``timeout_keep_alive``,
``limit_concurrency``), set by ``appt-pipeline serve``; see docs/operations.md §5 for the values.
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the limits of the module doc (class attributes; pass the class as
    uvicorn's ``http=``; a module-level class, so multi-worker serving can import it)."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_headers = True
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request of a keep-alive connection
            self._in_headers = True
            self._header_bytes = 0
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._refuse, 408)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int) -> None:
        """Answer ``status`` (only when no response has started) and close the connection."""
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(b"HTTP/1.1 " + _STATUS[status] + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()

