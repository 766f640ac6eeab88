"""WireGuard keys: generation, encoding, and key files that never leak."""

from __future__ import annotations

import base64
import binascii
import errno
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


@dataclass(frozen=True, repr=False)
class SecretKey:
    """Key bytes that never appear in repr, str or JSON; compared by type and value."""

    raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class PrivateKey(SecretKey):
    """An interface's private key."""

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


@dataclass(frozen=True, repr=False)
class PresharedKey(SecretKey):
    """A peer's preshared key."""


# A key file holds 44 base64 characters and a newline; anything much larger is not one,
# and is refused by its size before a byte of it is read.
MAX_KEY_FILE_SIZE = 4096

# X25519 public keys of small order (libsodium's list; RFC 7748, section 7): as
# integers, with bit 255 cleared as X25519 reads them. 0, 1, two points of order 8,
# and p-1, p, p+1 (p = 2^255 - 19).
_P = 2**255 - 19
_LOW_ORDER = frozenset({
    0,
    1,
    *(
        int.from_bytes(bytes.fromhex(h), "little")
        for h in (
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        )
    ),
    _P - 1,
    _P,
    _P + 1,
})


def weak_key_problem(raw: bytes, *, private: bool = True) -> str | None:
    """Why a private or preshared key must not be used, or None.

    All-zero key bytes mean "no key" to WireGuard (wireguard-go unsets the key, the
    kernel drops the identity; an all-zero preshared key is "none"), so the device would
    never match the file and every plan would set it again. With `private`, a key whose
    public key is of small order is refused too (every shared secret would be zero);
    clamping makes that impossible for a correct X25519, so it guards against a broken
    library rather than a bad file, for the price of one public key (`check` pays it,
    through key_file_problem; read_key_file does not).
    """
    if not any(raw):
        return "holds an all-zero key, which WireGuard reads as no key (make one with `bmx7-wg genkey`)"
    if private and weak_public_key(x25519_public(raw)):
        return "holds a private key whose public key is of small order (make one with `bmx7-wg genkey`)"
    return None


def weak_public_key(raw: bytes) -> bool:
    """Whether an X25519 public key is one of the small-order points."""
    return int.from_bytes(raw, "little") & ((1 << 255) - 1) in _LOW_ORDER


class UnsafeKeyFile(Exception):
    """A key file that must not be used; the message says why, without its content."""


def _key_file_text(path: str) -> str:
    """The text of a key file opened safely; OSError if it cannot be opened, UnsafeKeyFile
    with the reason if it must not be used.

    Opened without following a symlink and without blocking (a FIFO swapped in after
    `check` would block every later read); checked on the open descriptor, so that what
    is checked is what is read: a regular file, of at most MAX_KEY_FILE_SIZE bytes,
    owned by root or by the user running bmx7-wg, neither readable nor writable by group
    or others, in directories only their owner can change (as sshd's StrictModes).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeKeyFile("is a symbolic link (a key file must be the file itself)") from None
        raise
    try:
        st = os.fstat(fd)
        problem = _unsafe_file(st)
        if problem is None:
            problem = unsafe_directory(os.path.dirname(os.path.abspath(path)))
        if problem is not None:
            raise UnsafeKeyFile(problem)
        data = os.read(fd, MAX_KEY_FILE_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise UnsafeKeyFile(f"is larger than {MAX_KEY_FILE_SIZE} bytes: not a key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise UnsafeKeyFile("does not contain a WireGuard key") from None


def _unsafe_file(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return f"is not a regular file ({file_type(st.st_mode)})"
    if st.st_size > MAX_KEY_FILE_SIZE:
        return f"is larger than {MAX_KEY_FILE_SIZE} bytes ({st.st_size}): not a key file"
    if st.st_uid not in (0, os.geteuid()):
        return f"is owned by uid {st.st_uid}, not by root or the user running bmx7-wg"
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        what = "readable" if mode & 0o044 else "writable or executable"
        return f"is {what} by group or others (mode {mode:04o}; chmod 600 it)"
    return None


def unsafe_directory(directory: str) -> str | None:
    """Why a key file in `directory` could be replaced by someone else, or None.

    Like sshd's StrictModes: every directory from `directory` (or its nearest existing
    ancestor) up to / must be owned by root or the running user and not writable by
    group or others, unless it is sticky (like /tmp: others cannot rename or remove what
    they do not own there). Symlinked directories are judged where they lead.
    """
    current = os.path.realpath(directory)
    uid = os.geteuid()
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return f"is in a directory that cannot be checked ({current}: {exc.strerror})"
        if st is not None:
            if st.st_uid not in (0, uid):
                return f"is in a directory owned by uid {st.st_uid} ({current})"
            if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                mode = stat.S_IMODE(st.st_mode)
                return f"is in a directory others can write ({current}, mode {mode:04o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def key_file_problem(path: str, *, must_exist: bool, private: bool = True) -> str | None:
    """What is wrong with a key file, or None; for `check`, which must not create it.

    A file this process may not open is not reported: `check` run as a user cannot tell,
    and apply (as root) will. A missing file is fine unless `must_exist` (it will be
    created), but only in a directory that could hold it safely.
    """
    try:
        text = _key_file_text(path)
    except FileNotFoundError:
        if must_exist:
            return "does not exist"
        return unsafe_directory(os.path.dirname(os.path.abspath(path)))
    except PermissionError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except UnsafeKeyFile as exc:
        return str(exc)
    try:
        raw = decode_key(text)
    except ValueError:
        return "does not contain a WireGuard key"
    return weak_key_problem(raw, private=private)


def read_key_file(path: str) -> PrivateKey:
    """The key in a key file; KeyFileError (naming the file, never its content) if the file
    is missing, unsafe (see _key_file_text) or holds no usable key."""
    try:
        text = _key_file_text(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
    except UnsafeKeyFile as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    try:
        raw = decode_key(text)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    # Loading the configuration ran key_file_problem (with the public-key check) already.
    problem = weak_key_problem(raw, private=False)
    if problem is not None:
        raise KeyFileError(f"{path}: {problem}")
    return PrivateKey(raw)


def create_key_file(path: str) -> PrivateKey:
    """Create a new private key file atomically, mode 0600 from its first byte.

    Missing directories are made 0700 whatever the umask. The key is written to a new
    file of a random name (O_CREAT | O_EXCL | O_NOFOLLOW, retried on a clash: mkstemp),
    so a file or symlink someone placed at a guessable temporary name is never written
    through, then linked to `path`, which never replaces what is there.
    """
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    # Judged before anything is made there, and again once the directories exist: another
    # process may have made one of them meanwhile.
    _refuse_unsafe_directory(path, directory)
    _make_private_dirs(directory)
    _refuse_unsafe_directory(path, directory)
    key = PrivateKey.generate()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror or exc}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (key.to_base64() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() refuses to replace an existing file, so a key another process made
        # at the same moment wins and is used instead of being overwritten.
        os.link(tmp, path)
    except FileExistsError:
        return read_key_file(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror or exc}") from None
    finally:
        os.unlink(tmp)
    return key


def _refuse_unsafe_directory(path: str, directory: str) -> None:
    problem = unsafe_directory(directory)
    if problem is not None:
        raise KeyFileError(f"{path}: {problem}")


def _make_private_dirs(directory: str) -> None:
    """Make `directory` and its missing parents mode 0700, whatever the umask (os.makedirs
    gives the parents 0777 minus the umask)."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # made at the same moment by another process; judged below as any other
        except OSError as exc:
            raise KeyFileError(f"{directory}: cannot create directory {path}: {exc.strerror}") from None
        os.chmod(path, 0o700)
