"""Who is asking: bearer JWTs with the claims `sub`, `agency`, `roles` (§6).

Production validates tokens of an OIDC issuer (keys from its JWKS, cached and
refreshed on rotation, `aud` checked); development and tests set an HS256 secret,
and then only the signature, `exp` and the claims are checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status

from contracts import Agency
from kim.settings import KimSettings

AGENCIES = frozenset(a.value for a in Agency)
ROLES = frozenset({"agency_system", "case_manager", "auditor", "steering_group", "admin"})


@dataclass(frozen=True)
class Principal:
    sub: str
    agency: str
    roles: frozenset[str]
    expires_at: float | None = field(default=None, compare=False)
    """The token's `exp` (seconds since the epoch), when it came from a token."""

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


class AuthError(Exception):
    """The token is missing or not valid; the message says why."""


class TokenVerifier:
    def __init__(self, settings: KimSettings, jwks_refetch_cooldown_s: float = 10.0) -> None:
        # An unknown `kid` refetches the JWKS (key rotation), at most once per cooldown,
        # so that tokens with made-up key ids cannot make us hammer the issuer.
        self._cooldown_s = jwks_refetch_cooldown_s
        self._secret = settings.auth_hs256_secret if not settings.oidc_issuer else None
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._jwks_url = settings.oidc_jwks_url
        self._jwks: jwt.PyJWKClient | None = None
        if not self._issuer and not self._secret:
            raise ValueError("set KIM_OIDC_ISSUER (production) or KIM_AUTH_HS256_SECRET (development and tests)")

    def _jwks_client(self) -> jwt.PyJWKClient:
        # Built on first use, not at start-up, so a briefly unreachable issuer does not stop the service.
        if self._jwks is None:
            url = self._jwks_url
            if not url:
                import httpx

                discovery = f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"
                url = httpx.get(discovery, timeout=10).raise_for_status().json()["jwks_uri"]
            self._jwks = jwt.PyJWKClient(url, cache_keys=False, lifespan=300,
                                         cooldown_duration=self._cooldown_s)
        return self._jwks

    def verify(self, token: str) -> Principal:
        try:
            if self._secret is not None:
                claims = jwt.decode(token, self._secret, algorithms=["HS256"],
                                    options={"require": ["exp", "sub"], "verify_aud": False})
            else:
                key = self._jwks_client().get_signing_key_from_jwt(token)
                claims = jwt.decode(token, key.key, algorithms=["RS256", "ES256", "PS256"],
                                    issuer=self._issuer, audience=self._audience,
                                    options={"require": ["exp", "sub", "iss"],
                                             "verify_aud": self._audience is not None})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is not valid: {exc}") from exc
        return principal_from_claims(claims)


def principal_from_claims(claims: dict) -> Principal:
    agency = claims.get("agency")
    if agency not in AGENCIES:
        raise AuthError(f"claim 'agency' must be one of {', '.join(sorted(AGENCIES))}, got {agency!r}")
    roles = claims.get("roles")
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthError("claim 'roles' must be a list of role names")
    exp = claims.get("exp")
    return Principal(sub=str(claims["sub"]), agency=agency, roles=frozenset(r for r in roles if r in ROLES),
                     expires_at=float(exp) if isinstance(exp, (int, float)) else None)


def issue_dev_token(secret: str, *, sub: str, agency: str, roles: list[str], ttl_s: int = 3600) -> str:
    """A development token, as the dev login and the tests use."""
    return jwt.encode({"sub": sub, "agency": agency, "roles": roles, "exp": int(time.time()) + ttl_s},
                      secret, algorithm="HS256")


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("an 'Authorization: Bearer <token>' header is required")
    try:
        return request.app.state.token_verifier.verify(token.strip())
    except AuthError as exc:
        raise _unauthorised(str(exc)) from exc


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str):
    """A dependency that lets only principals with one of `roles` through (403 otherwise)."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any(*roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail=f"this needs one of the roles {', '.join(roles)}; "
                                       f"the token has {', '.join(sorted(principal.roles)) or 'none'}")
        return principal

    return Depends(dependency)
