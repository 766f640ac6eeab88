"""WireGuard keys: generation, encoding, and key files that never leak."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from bmx7_wg.errors import KeyFileError

KEY_LEN = 32


def clamp(raw: bytes) -> bytes:
    """Curve25519 clamping, as WireGuard stores a private key and reads it back."""
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def decode_key(text: str) -> bytes:
    """Decode a base64 WireGuard key; raise ValueError with a reason if it is not one."""
    text = text.strip()
    if len(text) != 44 or not text.endswith("="):
        raise ValueError("not a WireGuard key (44 base64 characters ending in '=')")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not a WireGuard key (invalid base64)") from None
    if len(raw) != KEY_LEN:
        raise ValueError("not a WireGuard key (must decode to 32 bytes)")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class PrivateKey:
    """A private (or preshared) key. Its bytes never appear in repr, str or JSON."""

    raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"

    __str__ = __repr__

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(clamp(os.urandom(KEY_LEN)))

    @classmethod
    def from_base64(cls, text: str) -> PrivateKey:
        return cls(decode_key(text))

    def to_base64(self) -> str:
        return encode_key(self.raw)

    @property
    def clamped(self) -> bytes:
        return clamp(self.raw)

    def public_key(self) -> str:
        """The base64 public key, exactly as `wg pubkey` prints it."""
        return encode_key(x25519_public(self.raw))


def x25519_public(raw: bytes) -> bytes:
    """The X25519 public key of a private key, by OpenSSL's libcrypto.

    Asked of libcrypto directly when it can be loaded: `cryptography` (bookworm's 38)
    costs 60-150 ms to import and set up, on every `apply` that checks a peer against the
    interface's own key; libcrypto, which Python itself links, costs ~5 ms. The same
    OpenSSL routine does the work either way; `cryptography` is the fallback.
    """
    libcrypto = _libcrypto()
    if libcrypto is not None:
        public = _libcrypto_public(libcrypto, raw)
        if public is not None:
            return public
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


_NID_X25519 = 1034  # EVP_PKEY_X25519 in OpenSSL's obj_mac.h
_LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1")  # OpenSSL 3 (bookworm), 1.1.1


@functools.cache
def _libcrypto() -> Any:
    """libcrypto with the three functions used here declared, or None (loaded once)."""
    import ctypes

    for name in _LIBCRYPTO_NAMES:
        try:
            lib = ctypes.CDLL(name)
            new_key = lib.EVP_PKEY_new_raw_private_key
            get_public = lib.EVP_PKEY_get_raw_public_key
            free = lib.EVP_PKEY_free
        except (OSError, AttributeError):
            continue
        new_key.restype = ctypes.c_void_p
        new_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        get_public.restype = ctypes.c_int
        get_public.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        free.restype = None
        free.argtypes = [ctypes.c_void_p]
        return lib
    return None


def _libcrypto_public(lib: Any, raw: bytes) -> bytes | None:
    import ctypes

    if len(raw) != KEY_LEN:
        raise ValueError("a private key is 32 bytes")
    pkey = lib.EVP_PKEY_new_raw_private_key(_NID_X25519, None, raw, KEY_LEN)
    if not pkey:
        return None
    try:
        out = ctypes.create_string_buffer(KEY_LEN)
        size = ctypes.c_size_t(KEY_LEN)
        if lib.EVP_PKEY_get_raw_public_key(pkey, out, ctypes.byref(size)) != 1 or size.value != KEY_LEN:
            return None
        return out.raw
    finally:
        lib.EVP_PKEY_free(pkey)


@dataclass(frozen=True)
class PresharedKey:
    """A preshared key; compared by value, never printed."""

    raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "PresharedKey(<redacted>)"

    __str__ = __repr__


def check_key_file_mode(path: str) -> str | None:
    """Return a problem with a key file's existence or mode, or None if it is fine."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_mode & 0o077:
        return f"is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)"
    return None


def read_key_file(path: str) -> PrivateKey:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc}") from None
    try:
        return PrivateKey(decode_key(text))
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def create_key_file(path: str) -> PrivateKey:
    """Create a new private key file atomically, mode 0600 from its first byte."""
    key = PrivateKey.generate()
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (key.to_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() refuses to replace an existing file, so a key another process made
        # at the same moment wins and is used instead of being overwritten.
        os.link(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        return read_key_file(path)
    os.unlink(tmp)
    return key


def load_or_create_key(path: str) -> PrivateKey:
    if os.path.exists(path):
        return read_key_file(path)
    return create_key_file(path)
