"""Public keys from libcrypto (the fast path) and from `cryptography` (the fallback) agree."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bmx7_wg import keys


def _by_cryptography(raw: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_libcrypto_is_used_on_debian() -> None:
    # bookworm's python3 links OpenSSL 3; if this fails the fast path silently went away.
    assert keys._libcrypto() is not None


def test_rfc7748_vector() -> None:
    # RFC 7748, section 6.1: Alice's private and public key.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert keys.x25519_public(private) == public


def test_libcrypto_and_cryptography_agree() -> None:
    for raw in [bytes(32), b"\xff" * 32, *(os.urandom(32) for _ in range(500))]:
        assert keys.x25519_public(raw) == _by_cryptography(raw)


def test_falls_back_to_cryptography_without_libcrypto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_libcrypto", lambda: None)
    raw = os.urandom(32)
    assert keys.x25519_public(raw) == _by_cryptography(raw)
    assert keys.PrivateKey(raw).public_key() == keys.encode_key(_by_cryptography(raw))


def test_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError):
        keys.x25519_public(b"short")
