"""Signing in to the screens: the development login, the OIDC code flow, CSRF and redirects.

The app runs without its lifespan (no Kafka, no database): only the sign-in routes
are exercised, with the OIDC issuer played by an httpx mock transport.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from kim.auth import TokenVerifier, issue_dev_token
from services.caseplan.bootstrap import create_app
from services.caseplan.login import SESSION_COOKIE, csrf_value, local_path
from services.caseplan.settings import CaseplanSettings

SECRET = "login-test-secret-of-thirty-two-bytes!!"
ISSUER = "https://login.example.test/realms/kim"


def dev_client() -> TestClient:
    settings = CaseplanSettings(auth_hs256_secret=SECRET)
    app = create_app(settings)
    app.state.settings, app.state.token_verifier = settings, TokenVerifier(settings)  # what the lifespan sets
    return TestClient(app, follow_redirects=False)


def test_the_screens_send_a_browser_without_session_to_the_login_and_back():
    client = dev_client()
    response = client.get("/persons/P-1?notice=x")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/persons/P-1%3Fnotice%3Dx"
    page = client.get("/login", params={"next": "/persons/P-1"})
    assert page.status_code == 200 and "Anmelden" in page.text and "Jugendamt" in page.text

    signed_in = client.post("/login", data={"sub": "m.yilmaz", "agency": "job_center", "role": "case_manager",
                                            "next": "/persons/P-1"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/persons/P-1"
    token = signed_in.cookies[SESSION_COOKIE]
    principal = client.app.state.token_verifier.verify(token)
    assert (principal.sub, principal.agency, principal.roles) == ("m.yilmaz", "job_center", {"case_manager"})
    assert "httponly" in signed_in.headers["set-cookie"].lower()

    refused = client.post("/login", data={"sub": "", "agency": "nowhere", "role": "admin"})
    assert refused.status_code == 303 and "error=" in refused.headers["location"]


def test_forms_need_the_csrf_value_of_the_session():
    client = dev_client()
    token = issue_dev_token(SECRET, sub="m", agency="integration_center", roles=["case_manager"])
    client.cookies.set(SESSION_COOKIE, token)
    forged = client.post("/persons/P-1/plan", data={"csrf": "0" * 32})
    assert forged.status_code == 403 and "Formular" in forged.text and "<html" in forged.text
    assert csrf_value(token) != csrf_value(token + "x")


@pytest.mark.parametrize("target, expected", [("/persons/P-1", "/persons/P-1"), ("//evil.example", "/"),
                                              ("https://evil.example/", "/"), ("/\\evil", "/"), (None, "/")])
def test_only_local_redirects(target, expected):
    assert local_path(target) == expected


def test_production_signs_in_with_the_oidc_authorisation_code_flow():
    settings = CaseplanSettings(oidc_issuer=ISSUER, oidc_client_id="kim-screens", oidc_client_secret="s3cret")
    app = create_app(settings)
    access_token = issue_dev_token(SECRET, sub="k.weber", agency="job_center", roles=["case_manager"])
    seen: dict = {}

    def issuer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"authorization_endpoint": f"{ISSUER}/auth",
                                             "token_endpoint": f"{ISSUER}/token"})
        seen.update(parse_qs(request.content.decode()))
        return httpx.Response(200, json={"access_token": access_token, "token_type": "Bearer"})

    app.state.settings = settings
    app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    # Tokens of the mock issuer are checked like development tokens; the flow is what is tested.
    app.state.token_verifier = TokenVerifier(CaseplanSettings(auth_hs256_secret=SECRET))
    client = TestClient(app, follow_redirects=False)

    start = client.get("/login", params={"next": "/persons/P-9"})
    location = urlsplit(start.headers["location"])
    query = parse_qs(location.query)
    assert start.status_code == 303 and f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/auth"
    assert query["client_id"] == ["kim-screens"] and query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == ["http://testserver/auth/callback"]
    assert client.post("/login", data={"sub": "x", "agency": "job_center", "role": "auditor"}).status_code == 404

    assert client.get("/auth/callback", params={"code": "c1", "state": "forged"}).status_code == 400
    done = client.get("/auth/callback", params={"code": "c1", "state": query["state"][0]})
    assert done.status_code == 303 and done.headers["location"] == "/persons/P-9"
    assert done.cookies[SESSION_COOKIE] == access_token
    assert seen["grant_type"] == ["authorization_code"] and seen["code"] == ["c1"]
    assert seen["client_secret"] == ["s3cret"] and len(seen["code_verifier"][0]) >= 43
