"""Masking of personal data and secrets before anything reaches a log or an exception message.

Logs end up in Application Insights, readable by more people than the data itself; an email or a
key must never be written there in clear.
"""

from __future__ import annotations

import hashlib


def email_hash(email: str) -> str:
    """A stable short hash of a normalised email, for correlating log lines without the address."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return f"email#{digest[:12]}"


def mask_email(email: str) -> str:
    """A human-recognisable but non-identifying form: first letter of the local part and the TLD."""
    value = email.strip()
    local, sep, domain = value.partition("@")
    if not sep:
        return email_hash(value)
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    head = local[:1] or "?"
    return f"{head}***@***.{tld}" if tld else f"{head}***@***"


def mask_secret(secret: str) -> str:
    """Never shows any character of a secret; the length hint helps tell an empty key from a set one."""
    return "<empty>" if not secret else f"<secret:{len(secret)} chars>"


def scrub(text: str, *secrets: str) -> str:
    """Remove known secrets and anything that looks like an email address from free text.

    Server error messages may echo the contact or the key back; this keeps them out of logs.
    """
    import re

    for secret in secrets:
        if secret:
            text = text.replace(secret, mask_secret(secret))
    return re.sub(
        r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*",
        lambda m: mask_email(m.group(0)),
        text,
    )
