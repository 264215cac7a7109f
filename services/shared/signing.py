"""Signed events: with BLOG_SECRET set, every `POST /events` carries an HMAC of its body.

The header is `X-Blog-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
Publishers sign what they send to the bus, the bus signs what it delivers, and every
receiver refuses (401) a body that is unsigned, wrongly signed or older than the tolerance.

A publisher names itself in `X-Blog-Source` (the bus logs it as each event's `source`); the
signature then covers that name too: the HMAC is of "<t>.<source>.<body>", so a signed
request cannot be passed off as another publisher's.
"""
from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Blog-Signature"
SOURCE_HEADER = "X-Blog-Source"
TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The request is not signed with the formation's secret, or the signature is stale."""


def _mac(secret: str, timestamp: int, body: bytes, source: str | None) -> str:
    signed = f"{timestamp}." + (f"{source}." if source else "")
    return hmac.new(secret.encode(), signed.encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: float | None = None, source: str | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={_mac(secret, timestamp, body, source)}"


def verify(secret: str, body: bytes, header: str | None, now: float | None = None, source: str | None = None) -> None:
    if not header:
        raise SignatureError(f"missing {HEADER} header: this formation requires signed events")
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        raise SignatureError(f"malformed {HEADER} header") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(f"stale signature ({int(now - timestamp)} s old; the limit is {TOLERANCE_SECONDS} s)")
    if not hmac.compare_digest(given, _mac(secret, timestamp, body, source)):
        raise SignatureError("signature does not match the body")


def headers(secret: str | None, body: bytes, source: str | None = None) -> dict[str, str]:
    """The headers to send with `body`: JSON, who sends it (if given), and a signature when a secret is set."""
    out = {"Content-Type": "application/json"}
    if source:
        out[SOURCE_HEADER] = source
    if secret:
        out[HEADER] = sign(secret, body, source=source)
    return out
