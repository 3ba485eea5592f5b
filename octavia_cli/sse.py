"""An incremental Server-Sent Events parser (the WHATWG event-stream format).

Envoy serves WatchJob as `data: {json}\n\n` per message; this parser takes the
bytes as they arrive, in chunks cut anywhere (inside a line, between `\r` and
`\n`, inside a UTF-8 character), and returns each event once its blank line
has come. Comments (`: ping`) are skipped, several `data:` lines join with
`\n`, and an event cut off by the end of the stream is dropped, as the
standard says.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str = ""
    retry_ms: int | None = None


class SSEParser:
    """Feed it chunks; it returns the events they complete."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        self.last_event_id = ""

    def feed(self, chunk: bytes | str) -> list[Event]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        events: list[Event] = []
        start, buffer = 0, self._buffer
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if lf != -1 and (cr == -1 or lf < cr):
                end, after = lf, lf + 1
            elif cr + 1 < len(buffer):
                end, after = cr, cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:
                break  # a final `\r`: wait to see whether `\n` follows
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[Event]:
        """The end of the stream: a pending `\r` still ends its line, but an
        event without its blank line is discarded."""
        tail = self._decoder.decode(b"", final=True)
        if self._buffer.endswith("\r"):
            tail += "\n"
        events = self.feed(tail) if tail else []
        self._buffer, self._data, self._event = "", [], ""
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alives and heartbeats of some servers
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> Event | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return Event(data="\n".join(data), event=event or "message", id=self.last_event_id, retry_ms=retry)


def iter_events(chunks: Iterable[bytes | str]) -> Iterator[Event]:
    """The events of a stream given as chunks (for example httpx's `iter_bytes()`)."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()
