"""proto.secrets: sealing with a configured key, key rotation, and what may be shown."""

from __future__ import annotations

import pytest
import redis
from cryptography.fernet import Fernet

from proto import keys
from proto.secrets import (
    SecretBox,
    SecretsError,
    box_from,
    load_credentials,
    mask,
    save_credentials,
)

PASSPHRASE = "sixteen or more characters"


def test_seal_and_open_with_a_fernet_key_or_a_passphrase() -> None:
    for key in (Fernet.generate_key().decode(), PASSPHRASE):
        box = SecretBox(key)
        sealed = box.seal("api-secret")
        assert "api-secret" not in sealed
        assert box.open(sealed) == "api-secret"
        assert SecretBox(key).open(sealed) == "api-secret"  # same key, another process


def test_a_fernet_key_is_used_as_given() -> None:
    key = Fernet.generate_key()
    assert Fernet(key).decrypt(SecretBox(key.decode()).seal("x").encode()) == b"x"


def test_rotation_opens_old_values_and_seals_with_the_new_key() -> None:
    old, new = "the old passphrase 123", "the new passphrase 456"
    sealed_before = SecretBox(old).seal("value")
    rotated = SecretBox(f"{new},{old}")
    assert rotated.open(sealed_before) == "value"
    assert SecretBox(new).open(rotated.seal("value")) == "value"
    with pytest.raises(SecretsError, match="cannot be opened"):
        SecretBox(old).open(rotated.seal("value"))


@pytest.mark.parametrize("key", ["", " , ", "too short"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(SecretsError):
        SecretBox(key)


def test_box_from_settings() -> None:
    assert box_from(None, None) is None
    jwt_box, again = box_from(None, "a configured jwt secret"), box_from(None,
                                                                        "a configured jwt secret")
    assert jwt_box is not None and again is not None
    assert again.open(jwt_box.seal("v")) == "v"
    assert box_from(PASSPHRASE, "a configured jwt secret").open(  # type: ignore[union-attr]
        SecretBox(PASSPHRASE).seal("w")) == "w"  # the secrets key wins
    with pytest.raises(SecretsError):  # the JWT secret's key is not the passphrase's
        SecretBox("a configured jwt secret").open(jwt_box.seal("v"))


def test_mask_shows_at_most_two_characters_each_end() -> None:
    assert mask("abcdefghij") == "ab••••••ij"
    assert mask("abc") == "•••"


def test_credentials_round_trip_and_wrong_key(r: redis.Redis) -> None:
    box = SecretBox(PASSPHRASE)
    save_credentials(r, box, "kite", " key123 ", "secret456", "root")
    assert "secret456" not in str(r.hgetall(keys.broker("kite")))
    creds = load_credentials(r, box, "kite")
    assert creds is not None and (creds.key, creds.secret, creds.updated_by) == (
        "key123", "secret456", "root")
    assert "secret456" not in repr(creds) and "secret456" not in repr(box)
    with pytest.raises(SecretsError, match="enter the credentials again"):
        load_credentials(r, SecretBox("another passphrase 789"), "kite")
    assert load_credentials(r, box, "upstox") is None
    with pytest.raises(SecretsError):
        save_credentials(r, box, "kite", "has space", "secret", "root")
