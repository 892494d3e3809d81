"""``text/event-stream`` framing (WHATWG HTML, server-sent events): encoding and incremental parsing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser", "encode_event"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event.

    Attributes:
        data: The ``data:`` lines joined with newlines.
        event: The ``event:`` field, ``""`` when absent (the default ``message``).
        id: The ``id:`` field, ``""`` when absent.
    """

    data: str
    event: str = ""
    id: str = ""


def encode_event(data: str, event: str = "", event_id: str = "") -> bytes:
    """Frame one event as ``id:``, ``event:`` and one ``data:`` line per line, then a blank line.

    The framing is byte-for-byte the runtime's (``SseEvent::encode_into``), so the three modes
    produce identical streams.
    """
    parts: list[str] = []
    if event_id:
        parts.append(f"id: {event_id}\n")
    if event:
        parts.append(f"event: {event}\n")
    parts.extend(f"data: {line}\n" for line in data.split("\n"))
    parts.append("\n")
    return "".join(parts).encode()


class SseParser:
    """Incremental parser: feed bytes as they arrive, get back the events they complete.

    Comment lines (``: ping``) and ``retry:`` fields are dropped; events without data are
    dropped too (as the WHATWG algorithm does when dispatching).
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add bytes; return the events completed by them, in order."""
        self._buffer += chunk
        # A trailing CR may be the first half of a CRLF split across chunks: keep it back.
        held = b"\r" if self._buffer.endswith(b"\r") else b""
        buf = self._buffer[: len(self._buffer) - len(held)]
        buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[SseEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            event = self._parse_block(buf[start:end].decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buf[start:] + held
        return events

    @staticmethod
    def _parse_block(block: str) -> SseEvent | None:
        data: list[str] = []
        event = ""
        event_id = ""
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                event_id = value
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event, id=event_id)
