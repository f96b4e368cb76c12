"""Standard Webhooks signatures for the feedback webhook (https://www.standardwebhooks.com).

A sender signs `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 under a `whsec_<base64>`
secret and sends `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64> [v1,...]`.
The id is inside the signature, so a captured request cannot be replayed under a fresh id; the
webhook refuses a seen id (409) from the feedback store, across restarts.

The HMAC itself is the `standardwebhooks` package's: any client with a Standard Webhooks library
can sign. The package raises `ValueError`s and `binascii.Error`s of its own on some malformed
headers (a non-ASCII digest, an entry without a comma) and decodes the body as UTF-8, so every
header is checked here first and a malformed one is refused (401) before the package sees it.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MAX_ID_CHARS = 256

_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_CHARS}}}")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds; no sign, exponent, fraction or space
_ENTRY = re.compile(r"v1,([A-Za-z0-9+/]{43}=)")  # base64 of a 32-byte HMAC-SHA256


class SignatureRefused(Exception):
    """The request is unsigned, tampered with, malformed or stale (HTTP 401)."""


class SecretInvalid(ValueError):
    """`TUNEGATE_WEBHOOK_SECRET` is not a Standard Webhooks secret; the message says how to make one."""


def check_secret(secret: str) -> str:
    """The secret as given, once it is `whsec_` + base64 of 24 to 64 bytes (the spec's range)."""
    hint = (
        "TUNEGATE_WEBHOOK_SECRET must be a Standard Webhooks secret, whsec_ + base64 of 24-64 "
        'random bytes; make one with: python -c "import base64, os; '
        "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
    )
    if not secret.startswith(SECRET_PREFIX):
        raise SecretInvalid(hint)
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SecretInvalid(hint) from None
    if not 24 <= len(key) <= 64:
        raise SecretInvalid(hint)
    return secret


def sign_headers(
    secret: str, body: bytes, msg_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers a Standard Webhooks sender sets, signed by the package (for clients)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(t, tz=UTC), body.decode())
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: signature}


def verify_request(
    webhook: Webhook, headers: dict[str, str], body: bytes, now: float, max_age_s: int
) -> str:
    """The signed message id, or `SignatureRefused` naming what is wrong (never another error).

    `headers` maps lower-case names to values. The timestamp must be within `max_age_s` of `now`
    (the package also holds it to its own five minutes of the real clock).
    """
    msg_id = headers.get(ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    given = {ID_HEADER: msg_id, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise SignatureRefused(f"missing {', '.join(missing)} (Standard Webhooks headers)")
    if not _ID.fullmatch(msg_id):
        raise SignatureRefused(
            f"malformed {ID_HEADER}: 1-{MAX_ID_CHARS} printable ASCII characters, no spaces"
        )
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureRefused(f"malformed {TIMESTAMP_HEADER}: expected unix seconds")
    if abs(now - int(timestamp)) > max_age_s:
        raise SignatureRefused(
            f"{TIMESTAMP_HEADER} is more than webhook.max_age_s ({max_age_s} s) from now"
        )
    entries = [m.group(0) for e in signature.split(" ") if (m := _ENTRY.fullmatch(e))]
    if not entries:
        raise SignatureRefused(f"malformed {SIGNATURE_HEADER}: expected v1,<base64> entries")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureRefused("body is not UTF-8: Standard Webhooks signs text") from None
    clean = {ID_HEADER: msg_id, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: " ".join(entries)}
    try:
        webhook.verify(text, clean, json_parse=False)
    except WebhookVerificationError as exc:
        raise SignatureRefused(f"signature refused: {exc}") from None
    except (ValueError, binascii.Error, OverflowError):  # the package's own parsing, checked above
        raise SignatureRefused(f"malformed {SIGNATURE_HEADER}") from None
    return msg_id
