"""The HTTP/1.1 protocol jongleur serves with: uvicorn's h11 protocol, answering with h11's status hint.

uvicorn's default ("auto") picks httptools when installed, which has no limit on header size;
h11's `max_incomplete_event_size` bounds only a head still arriving (one that comes whole in a read
passes), and uvicorn answers every protocol error with 400. Here a request head (request line +
headers) over `MAX_HEADER_BYTES` gets 431 Request Header Fields Too Large, however it arrives.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 64 * 1024
DISCARD_S = 1.0  # after a 431, how long the rest of the request is read and dropped before closing


def _head_bytes(request: h11.Request) -> int:
    """Size of the request head as sent: request line and `name: value\r\n` lines."""
    line = len(request.method) + len(request.target) + 11  # " " + " HTTP/1.1\r\n"
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


class StatusHintH11Protocol(H11Protocol):
    """`H11Protocol` whose protocol-error response carries h11's `error_status_hint` (431, 400...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._error_status = 400
        next_event = self.conn.next_event

        def next_event_noting_status() -> Any:
            try:
                event = next_event()
            except h11.RemoteProtocolError as exc:
                self._error_status = exc.error_status_hint
                raise
            if isinstance(event, h11.Request) and _head_bytes(event) > MAX_HEADER_BYTES:
                self._error_status = 431
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            return event

        self.conn.next_event = next_event_noting_status  # type: ignore[method-assign]
        self._discarding = False

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # the rest of a refused request: read and drop it
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        status = self._error_status
        if status == 431:
            msg = f"Request header fields too large (limit {MAX_HEADER_BYTES} bytes)."
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        self.transport.write(self.conn.send(h11.Data(data=msg.encode("ascii"))) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        if status == 431:
            # closing with the client's bytes unread would reset the connection and lose the answer:
            # keep reading (and dropping) them a moment, then close
            self._discarding = True
            self.loop.call_later(DISCARD_S, self.transport.close)
        else:
            self.transport.close()
