"""Production tokens: an OIDC issuer's JWKS, with `aud` checked and rotated keys picked up.

The issuer is a small HTTP server on this machine serving a discovery document
and a JWKS, as a district's identity provider would.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from kim.auth import AuthError, TokenVerifier
from kim.infra.kafka import free_port
from kim.settings import KimSettings


class Issuer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/realms/district"
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.rotate()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/certs"}
                elif self.path.endswith("/certs"):
                    body = {"keys": [dict(json.loads(RSAAlgorithm.to_jwk(k.public_key())), kid=kid, use="sig",
                                          alg="RS256") for kid, k in issuer.keys.items()]}
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        return kid

    def token(self, audience: str = "kim", **claims: object) -> str:
        kid, key = next(iter(self.keys.items()))
        body = {"iss": self.url, "aud": audience, "sub": "u1", "agency": "job_center", "roles": ["case_manager"],
                "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer():
    issuer = Issuer()
    yield issuer
    issuer.server.shutdown()


def test_tokens_of_the_issuer_are_accepted_and_rotated_keys_picked_up(issuer):
    verifier = TokenVerifier(KimSettings(oidc_issuer=issuer.url, oidc_audience="kim"), jwks_refetch_cooldown_s=0)
    principal = verifier.verify(issuer.token())
    assert (principal.agency, principal.roles) == ("job_center", frozenset({"case_manager"}))

    issuer.rotate()  # the identity provider rolls its signing key
    assert verifier.verify(issuer.token(sub="u2")).sub == "u2"


@pytest.mark.parametrize("change, message", [
    ({"audience": "another-app"}, "not valid"),
    ({"exp": int(time.time()) - 10}, "expired"),
    ({"iss": "http://127.0.0.1:1/evil"}, "not valid"),
    ({"agency": "ministry"}, "agency"),
])
def test_tokens_that_do_not_fit_are_refused(issuer, change, message):
    verifier = TokenVerifier(KimSettings(oidc_issuer=issuer.url, oidc_audience="kim"))
    with pytest.raises(AuthError, match=message):
        verifier.verify(issuer.token(**change))


def test_a_token_signed_with_a_key_the_issuer_does_not_publish_is_refused(issuer):
    verifier = TokenVerifier(KimSettings(oidc_issuer=issuer.url, oidc_audience="kim"))
    forged = jwt.encode({"iss": issuer.url, "aud": "kim", "sub": "x", "agency": "job_center",
                         "roles": ["admin"], "exp": int(time.time()) + 300},
                        rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                        headers={"kid": "key-1"})
    with pytest.raises(AuthError):
        verifier.verify(forged)
