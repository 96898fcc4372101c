"""Envelope encryption of personal data with one key per person.

Each person's data key (random, AES-256) encrypts their personal data
(AES-GCM); the data key itself is stored wrapped by the district's master key
in its own table. Deleting that one row makes the person's data unreadable in
every copy of the event store (crypto-shredding). The master key also keys the
blind index used to find duplicate registrations without storing names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_NONCE_BYTES = 12
_SEALED_PREFIX = "v1."


class KeyProblem(Exception):
    """A key is missing or does not fit; the message says which and why."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def parse_master_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyProblem(f"{origin} must be {KEY_BYTES} random bytes in base64 (e.g. `openssl rand -base64 32`)")
    return key


def load_or_create_master_key(configured: str | None, key_file: Path) -> bytes:
    """The configured key (KIM_INTAKE_MASTER_KEY), else the key file, created once.

    Several intake processes sharing one database must share the key: configure it.
    """
    if configured:
        return parse_master_key(configured, "KIM_INTAKE_MASTER_KEY")
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_b64(secrets.token_bytes(KEY_BYTES)) + "\n")
    return parse_master_key(key_file.read_text(), f"the key file {key_file}")


class KeyRing:
    """What the master key does: wrap data keys, key the duplicate index."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise KeyProblem(f"the master key must have {KEY_BYTES} bytes")
        self._wrapping = AESGCM(_derive(master_key, b"kim-intake data-key wrapping"))
        self._index_key = _derive(master_key, b"kim-intake duplicate index")
        self.check_value = hmac.new(_derive(master_key, b"kim-intake key check"), b"check",
                                    hashlib.sha256).hexdigest()

    @staticmethod
    def new_data_key() -> bytes:
        return AESGCM.generate_key(bit_length=KEY_BYTES * 8)

    def wrap(self, subject: str, data_key: bytes) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _b64(nonce + self._wrapping.encrypt(nonce, data_key, _aad("key", subject)))

    def unwrap(self, subject: str, wrapped: str) -> bytes:
        raw = _unb64(wrapped)
        try:
            return self._wrapping.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad("key", subject))
        except InvalidTag:
            raise KeyProblem(f"the data key of {subject} does not open with this master key") from None

    def blind_index(self, key: str) -> str:
        """Keyed hash of a duplicate key: equal keys match, names cannot be read back."""
        return hmac.new(self._index_key, key.encode(), hashlib.sha256).hexdigest()


def seal(data_key: bytes, subject: str, plaintext: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _SEALED_PREFIX + _b64(nonce + AESGCM(data_key).encrypt(nonce, plaintext, _aad("data", subject)))


def unseal(data_key: bytes, subject: str, sealed: str) -> bytes:
    if not sealed.startswith(_SEALED_PREFIX):
        raise KeyProblem(f"the sealed data of {subject} have an unknown format")
    raw = _unb64(sealed.removeprefix(_SEALED_PREFIX))
    try:
        return AESGCM(data_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad("data", subject))
    except InvalidTag:
        raise KeyProblem(f"the sealed data of {subject} do not open with its key") from None


def _aad(purpose: str, subject: str) -> bytes:
    # Binds a ciphertext to its person, so no one can swap two persons' rows.
    return f"kim-intake {purpose} {subject}".encode()


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master_key)
