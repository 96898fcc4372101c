"""`kim audit access-log --subject S`: who read a person's data, when and why, from intake's access log."""

from __future__ import annotations

from typing import Any

import httpx

COLUMNS = (("at", "when"), ("reader_sub", "who"), ("reader_agency", "agency"), ("roles", "roles"),
           ("action", "action"), ("purpose", "why"), ("consent_purposes", "consented purposes"))


def fetch(intake: str, token: str, subject: str) -> list[dict[str, Any]]:
    """The entries of intake's `GET /v1/access-log?subject=S`, oldest first."""
    response = httpx.get(f"{intake}/v1/access-log", params={"subject": subject},
                         headers={"authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return sorted(response.json(), key=lambda e: str(e.get("at", "")))


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def table(subject: str, entries: list[dict[str, Any]]) -> str:
    """A readable table of the entries (one line each)."""
    if not entries:
        return f"nobody has read the data of {subject} (no entries in the access log)\n"
    rows = [[title for _, title in COLUMNS]] + [[_text(e.get(key)) for key, _ in COLUMNS] for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"access log of {subject}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"
