"""Secrets kept encrypted at rest in Redis: the broker API credentials the admin enters.

Values are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key that never enters
Redis: ``STORMALERT_SECRETS_KEY`` (a Fernet key, or any passphrase of 16+ characters, from
which a key is derived), else a key derived from the configured JWT secret. Several keys may
be given comma-separated, newest first: values are sealed with the first and opened with
any, so a key can be rotated. Without a configured key nothing is stored.

``keys.broker(feed)`` is a hash: ``key`` and ``secret`` (Fernet tokens), ``updated`` (epoch
s), ``updated_by`` (the admin's name). Plain values never reach a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proto import keys

MIN_PASSPHRASE = 16
_KDF_INFO = b"stormalert secrets at rest v1"


class SecretsError(ValueError):
    """No key configured, a bad key, or a value that cannot be opened with the keys given."""


def _fernet_key(text: str) -> bytes:
    """``text`` itself when it is a Fernet key, else a key derived from it."""
    raw = text.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    if len(raw) < MIN_PASSPHRASE:
        raise SecretsError(
            f"secrets key too short: a Fernet key or a passphrase of {MIN_PASSPHRASE}+ characters")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(raw)
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    """Seals and opens text with the configured key(s)."""

    def __init__(self, key_text: str) -> None:
        parts = [p for p in key_text.split(",") if p.strip()]
        if not parts:
            raise SecretsError("empty secrets key")
        self._fernet = MultiFernet([Fernet(_fernet_key(p)) for p in parts])

    def __repr__(self) -> str:
        return "SecretBox(...)"

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretsError("a stored secret cannot be opened with the configured key "
                               "(was the key changed?): enter the credentials again") from None


def box_from(secrets_key: str | None, jwt_secret: str | None) -> SecretBox | None:
    """The box for the configured key, else one derived from a configured JWT secret, else
    None. A JWT secret generated into Redis is never used: the key would sit beside the data."""
    if secrets_key:
        return SecretBox(secrets_key)
    if jwt_secret:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=_KDF_INFO + b" from jwt").derive(jwt_secret.encode())
        return SecretBox(base64.urlsafe_b64encode(derived).decode())
    return None


def mask(value: str) -> str:
    """A form of an identifier safe to show: its first and last two characters at most."""
    if len(value) <= 6:
        return "•" * len(value)
    return f"{value[:2]}{'•' * 6}{value[-2:]}"


@dataclass(frozen=True, slots=True)
class Credentials:
    key: str = field(repr=False)
    secret: str = field(repr=False)
    updated: float = 0.0
    updated_by: str = ""


def save_credentials(r: redis.Redis, box: SecretBox, feed: str, key: str, secret: str,
                     by: str) -> None:
    key, secret = key.strip(), secret.strip()
    if not key or not secret:
        raise SecretsError("both the key and the secret are required")
    if len(key) > 200 or len(secret) > 200 or any(c.isspace() for c in key + secret):
        raise SecretsError("the key and the secret are single words of at most 200 characters")
    r.hset(keys.broker(feed), mapping={
        "key": box.seal(key), "secret": box.seal(secret),
        "updated": str(int(time.time())), "updated_by": by,
    })


def load_credentials(r: redis.Redis, box: SecretBox, feed: str) -> Credentials | None:
    """The stored credentials of a broker, None when there are none; SecretsError when they
    cannot be opened with the configured key."""
    record: dict[str, str] = r.hgetall(keys.broker(feed))  # type: ignore[assignment]
    if not record.get("key") or not record.get("secret"):
        return None
    return Credentials(box.open(record["key"]), box.open(record["secret"]),
                       float(record.get("updated") or 0), record.get("updated_by", ""))


def remove_credentials(r: redis.Redis, feed: str) -> bool:
    return bool(r.delete(keys.broker(feed)))
