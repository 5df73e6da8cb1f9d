"""Tokens: signed, expiring credentials that reach one workflow (or an ID prefix) only.

A backend holding an API key mints a token with POST /tokens and hands it to a browser, which
can then read that workflow (and, with the `send` scope, message it) but nothing else. A token
is a JWT signed with HS256 (PyJWT) under COMM_TOKEN_SECRET; its claims are readable by whoever
holds it (signed, not encrypted), so they carry only the workflow ID or prefix, the scopes, the
tenant of the key that minted it, and its times. The server keeps no state about tokens: a
token is valid until it expires, and rotating the secret without keeping the old one as
COMM_TOKEN_PREVIOUS_SECRET revokes every token at once.

This module signs and verifies; auth.py decides what a verified token's caller may do.
"""

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from pydantic import BaseModel, ValidationError

from workflow_comm.names import TokenScope
from workflow_comm.settings import Settings

ALGORITHM = "HS256"
# Every token names this audience, so a JWT another system signs with a reused secret is refused.
AUDIENCE = "workflow-comm"


class InvalidToken(Exception):
    """The token is expired, forged, or not one of ours; the message says which, for a 401."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a token reaches: one workflow or every ID with a prefix (IDs as its tenant names
    them), and what it may do there."""

    tenant: str | None
    scopes: frozenset[TokenScope]
    workflow_id: str | None = None
    workflow_id_prefix: str | None = None

    def reaches(self, workflow_id: str) -> bool:
        if self.workflow_id_prefix is not None:
            return workflow_id.startswith(self.workflow_id_prefix)
        return workflow_id == self.workflow_id

    def allows(self, scope: TokenScope) -> bool:
        return scope in self.scopes


class _Claims(BaseModel, frozen=True):
    """The claims of ours in a token (PyJWT checks `aud`, `exp` and `iat`)."""

    scopes: list[TokenScope]
    tenant: str | None = None
    workflow_id: str | None = None
    workflow_id_prefix: str | None = None


def looks_like_token(presented: str) -> bool:
    """A JWT's shape: three dot-separated parts. Asked only of a credential that is no
    configured key (a key may hold dots; those README shows how to make have none)."""
    return presented.count(".") == 2


class TokenIssuer:
    """Mints tokens with the current secret; verifies them with it or the previous one.

    One per app, made from its settings by create_app and kept on `app.state.tokens`.
    """

    def __init__(self, settings: Settings) -> None:
        secrets = (settings.token_secret, settings.token_previous_secret)
        self._secrets = [s.get_secret_value().encode() for s in secrets if s is not None]

    @property
    def enabled(self) -> bool:
        return bool(self._secrets)

    def mint(self, grant: TokenGrant, ttl_seconds: int) -> tuple[str, datetime]:
        """The token for `grant`, and when it expires (at least `ttl_seconds` from now)."""
        now = time.time()
        expires = math.ceil(now + ttl_seconds)  # whole seconds, as JWT's exp is read
        claims = _Claims(
            scopes=sorted(grant.scopes),
            tenant=grant.tenant,
            workflow_id=grant.workflow_id,
            workflow_id_prefix=grant.workflow_id_prefix,
        )
        payload = {
            **claims.model_dump(exclude_none=True),
            "aud": AUDIENCE,
            "iat": math.floor(now),
            "exp": expires,
        }
        token = jwt.encode(payload, self._secrets[0], algorithm=ALGORITHM)
        return token, datetime.fromtimestamp(expires, UTC)

    def verify(self, token: str) -> TokenGrant:
        """The grant of a token signed with one of the secrets and not expired; InvalidToken
        otherwise. Only HS256 is accepted: `alg: none` and every other algorithm are refused."""
        for secret in self._secrets:
            try:
                payload = jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    options={"require": ["exp", "iat", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue  # perhaps signed with the previous secret
            except jwt.ExpiredSignatureError:
                raise InvalidToken("The token has expired: ask for a new one.") from None
            except jwt.InvalidTokenError:
                break
            try:
                claims = _Claims.model_validate(payload)
            except ValidationError:
                break
            if (claims.workflow_id is None) == (claims.workflow_id_prefix is None):
                break
            return TokenGrant(
                tenant=claims.tenant,
                scopes=frozenset(claims.scopes),
                workflow_id=claims.workflow_id,
                workflow_id_prefix=claims.workflow_id_prefix,
            )
        raise InvalidToken("The token is not valid.")
