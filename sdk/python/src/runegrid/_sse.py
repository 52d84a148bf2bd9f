"""A small Server-Sent Events parser, fed one line at a time (httpx's ``iter_lines``)."""

from __future__ import annotations

import json
from typing import Any


class SseParser:
    """Collects ``event:``/``data:`` fields and returns each event when its blank line
    arrives, as the JSON object of its data (the coordinator's events are JSON with a
    ``type`` field; the event name fills ``type`` where the data lacks it)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed_raw(self, line: str) -> tuple[str, str] | None:
        """The event completed by ``line``, as ``(name, data)`` (the name ``message`` when the
        event has none; the data lines joined by newlines), else ``None``."""
        line = line.rstrip("\r\n")
        if line == "":
            if not self._data:
                self._event = ""
                return None
            data = "\n".join(self._data)
            name = self._event or "message"
            self._event, self._data = "", []
            return name, data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def feed(self, line: str) -> dict[str, Any] | None:
        event = self.feed_raw(line)
        if event is None:
            return None
        name, data = event
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"data": data}
        if not isinstance(parsed, dict):
            parsed = {"data": parsed}
        parsed.setdefault("type", name)
        return parsed
