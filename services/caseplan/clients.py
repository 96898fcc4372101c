"""Calls from the screens to the intake and referral services, on behalf of the signed-in user.

The user's own token is forwarded, so each service applies its own rules (§6) to
what it answers; nothing here widens what a user may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class PeerUnavailable(Exception):
    """The other service did not answer; the message names it."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> Any:
        return self.body.get("detail") if isinstance(self.body, dict) else self.body


class Peer:
    def __init__(self, name: str, base_url: str, http: httpx.AsyncClient) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http

    async def call(self, method: str, path: str, token: str, *, json: Any = None,
                   params: dict[str, str] | None = None) -> Answer:
        try:
            response = await self._http.request(method, self.base_url + path, json=json, params=params,
                                                headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"the {self.name} service at {self.base_url} does not answer ({exc!r})") from exc
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return Answer(response.status_code, response.json() if is_json and response.content else response.text)
