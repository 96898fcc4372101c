"""Signing in to the screens: the token lives in an HttpOnly cookie.

Development (`KIM_AUTH_HS256_SECRET`, no issuer): `/login` lets one choose a name,
an agency and a role and issues a development token. Production (`KIM_OIDC_ISSUER`):
`/login` starts the OIDC authorisation code flow (with PKCE) at the issuer and
`/auth/callback` exchanges the code for the access token, which the services check
like any other bearer token. Forms carry a CSRF value derived from the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import urlencode

import httpx
import orjson
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from kim.auth import AGENCIES, AuthError, Principal, issue_dev_token
from services.caseplan.labels import AGENCY_NAMES, ROLE_NAMES

SESSION_COOKIE = "kim_session"
FLOW_COOKIE = "kim_oidc_flow"
SESSION_TTL_S = 8 * 3600
DEV_ROLES = ("case_manager", "auditor")

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """No valid session: the screens send the browser to /login."""


def session_token(request: Request) -> str:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired
    return token


def web_principal(request: Request) -> Principal:
    try:
        return request.app.state.token_verifier.verify(session_token(request))
    except AuthError as exc:
        raise LoginRequired from exc


WebUser = Annotated[Principal, Depends(web_principal)]


def csrf_value(token: str) -> str:
    """Known only to whoever holds the session token, so another site cannot forge a form."""
    return hmac.new(token.encode(), b"kim-caseplan-form", hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(submitted, csrf_value(session_token(request))):
        raise HTTPException(403, detail="Das Formular ist abgelaufen. Bitte die Seite neu laden.")


def local_path(target: str | None) -> str:
    """Only paths of this site (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _secure(request: Request) -> bool:
    """Cookies travel over HTTPS only when the screens are served over HTTPS."""
    return request.url.scheme == "https"


def _signed_in(request: Request, target: str, token: str) -> Response:
    response = RedirectResponse(local_path(target), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="lax",
                        secure=_secure(request))
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
    settings = request.app.state.settings
    if settings.oidc_issuer:
        return await _start_oidc(request, next)
    return request.app.state.templates.TemplateResponse(
        request, "login.html", {"agencies": AGENCY_NAMES, "roles": {r: ROLE_NAMES[r] for r in DEV_ROLES},
                                "next": local_path(next), "error": error})


@router.post("/login")
async def dev_login(request: Request, sub: Annotated[str, Form(max_length=100)] = "",
                    agency: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "",
                    next: Annotated[str, Form()] = "/") -> Response:
    settings = request.app.state.settings
    if settings.oidc_issuer or not settings.auth_hs256_secret:
        raise HTTPException(404, detail="the development login is off; sign in at the OIDC issuer")
    sub = sub.strip()
    if not sub or agency not in AGENCIES or role not in DEV_ROLES:
        query = urlencode({"next": local_path(next), "error": "Bitte Kennung, Behörde und Rolle angeben."})
        return RedirectResponse(f"/login?{query}", status_code=303)
    token = issue_dev_token(settings.auth_hs256_secret, sub=sub, agency=agency, roles=[role], ttl_s=SESSION_TTL_S)
    return _signed_in(request, next, token)


@router.get("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# ---- OIDC authorisation code flow -----------------------------------------------------------

async def _discovery(request: Request) -> dict:
    state = request.app.state
    if getattr(state, "oidc_discovery", None) is None:
        issuer = state.settings.oidc_issuer.rstrip("/")
        try:
            response = await state.http.get(f"{issuer}/.well-known/openid-configuration")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise HTTPException(503, detail=f"the sign-in service {issuer} does not answer ({exc!r})") from exc
        state.oidc_discovery = response.json()
    return state.oidc_discovery


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def _start_oidc(request: Request, next: str) -> Response:
    settings = request.app.state.settings
    if not settings.oidc_client_id:
        raise HTTPException(503, detail="KIM_OIDC_CLIENT_ID is not set; the screens cannot sign anyone in")
    discovery = await _discovery(request)
    flow = {"state": secrets.token_urlsafe(24), "verifier": secrets.token_urlsafe(48), "next": local_path(next)}
    query = urlencode({"response_type": "code", "client_id": settings.oidc_client_id, "scope": "openid",
                       "redirect_uri": str(request.url_for("oidc_callback")), "state": flow["state"],
                       "code_challenge": _challenge(flow["verifier"]), "code_challenge_method": "S256"})
    response = RedirectResponse(f"{discovery['authorization_endpoint']}?{query}", status_code=303)
    response.set_cookie(FLOW_COOKIE, base64.urlsafe_b64encode(orjson.dumps(flow)).decode(), max_age=600,
                        httponly=True, samesite="lax", secure=_secure(request))
    return response


@router.get("/auth/callback", name="oidc_callback")
async def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
    settings = request.app.state.settings
    try:
        flow = orjson.loads(base64.urlsafe_b64decode(request.cookies.get(FLOW_COOKIE, "")))
    except ValueError:
        flow = {}
    if not code or not isinstance(flow, dict) or not hmac.compare_digest(state, flow.get("state", "")):
        raise HTTPException(400, detail="sign-in did not come back as started; start again at /login")
    discovery = await _discovery(request)
    try:
        response = await request.app.state.http.post(discovery["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "code_verifier": flow["verifier"],
            "redirect_uri": str(request.url_for("oidc_callback")), "client_id": settings.oidc_client_id,
            "client_secret": settings.oidc_client_secret or ""})
    except httpx.HTTPError as exc:
        raise HTTPException(503, detail=f"the sign-in service does not answer ({exc!r})") from exc
    if response.status_code != 200:
        raise HTTPException(401, detail=f"the sign-in service refused the code ({response.status_code})")
    token = response.json().get("access_token", "")
    try:
        request.app.state.token_verifier.verify(token)  # it must carry agency and roles
    except AuthError as exc:
        raise HTTPException(401, detail=f"the issuer's token is not usable here: {exc}") from exc
    signed_in = _signed_in(request, flow["next"], token)
    signed_in.delete_cookie(FLOW_COOKIE)
    return signed_in
