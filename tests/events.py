"""Building a person's events as agency systems send them."""

from __future__ import annotations

import uuid
from datetime import datetime

from contracts import rfc3339


class Person:
    """Builds one person's events with fresh ids."""

    def __init__(self) -> None:
        self.subject = f"P-{uuid.uuid4().hex[:12]}"
        self.n = 0

    def event(self, agency: str, name: str, time: str | datetime, data: dict,
              recorded: str | datetime | None = None) -> dict:
        """`recorded` defaults to `time`."""
        self.n += 1
        time = rfc3339(time) if isinstance(time, datetime) else time
        recorded = rfc3339(recorded) if isinstance(recorded, datetime) else (recorded or time)
        return {"specversion": "1.0", "id": f"{self.subject}-{self.n}", "source": f"urn:kim:{agency}:test",
                "type": f"de.kim.{name}.v1", "subject": self.subject, "time": time, "recordedtime": recorded,
                "datacontenttype": "application/json", "data": data}
