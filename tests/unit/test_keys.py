"""Keys: public keys from libcrypto (the fast path) and `cryptography` (the fallback) agree;
key files are read and created so that no one else can swap, block or read them."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bmx7_wg import keys
from bmx7_wg.errors import KeyFileError


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


# ------------------------------------------------------------------ key files


def _key_file(path: Path, mode: int = 0o600, content: str | None = None) -> Path:
    path.write_text(keys.PrivateKey.generate().to_base64() + "\n" if content is None else content)
    path.chmod(mode)
    return path


def _refused(path: Path | str) -> str:
    with pytest.raises(KeyFileError) as caught:
        keys.read_key_file(str(path))
    return str(caught.value)


def test_a_good_key_file_is_read(tmp_path: Path) -> None:
    key = keys.PrivateKey.generate()
    path = _key_file(tmp_path / "wg.key", 0o400, key.to_base64() + "\n")
    assert keys.read_key_file(str(path)) == key


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = _key_file(tmp_path / "target.key")
    (tmp_path / "link.key").symlink_to(target)
    assert _refused(tmp_path / "link.key").endswith("is a symbolic link (a key file must be the file itself)")


def test_a_fifo_never_blocks(tmp_path: Path, no_hang: None) -> None:
    os.mkfifo(tmp_path / "wg.key", 0o600)
    assert _refused(tmp_path / "wg.key").endswith("is not a regular file (a FIFO)")


def test_a_large_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.key"
    with open(path, "wb") as fh:
        fh.truncate(400 * 1024 * 1024)  # sparse; read whole it would cost 400 MB
    path.chmod(0o600)
    assert _refused(path).endswith("is larger than 4096 bytes (419430400): not a key file")


def test_the_owner_must_be_root_or_this_user(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "wg.key")
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    assert "is owned by uid" in _refused(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610])
def test_group_and_others_have_no_access(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path / "wg.key", mode)
    assert f"by group or others (mode {mode:04o}; chmod 600 it)" in _refused(path)


def test_the_directories_must_be_safe(tmp_path: Path) -> None:
    for mode in (0o777, 0o770, 0o757):
        directory = tmp_path / f"d{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
        path = _key_file(directory / "wg.key")
        assert f"is in a directory others can write ({directory}, mode {mode:04o})" in _refused(path)
    # A directory further up counts too, and so does one owned by someone else.
    outer = tmp_path / "d777" / "inner"
    outer.mkdir(mode=0o700)
    assert "others can write" in _refused(_key_file(outer / "wg.key"))
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    assert "is in a directory owned by uid" in _refused(_key_file(theirs / "wg.key"))


def test_an_all_zero_key_is_refused(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "wg.key", content="A" * 43 + "=\n")
    assert "holds an all-zero key" in _refused(path)


def test_the_small_order_points_are_small_order() -> None:
    # Each listed public key makes every shared secret zero, which OpenSSL refuses.
    me = X25519PrivateKey.generate()
    for value in keys._LOW_ORDER:
        with pytest.raises(ValueError):
            me.exchange(X25519PublicKey.from_public_bytes(value.to_bytes(32, "little")))
    assert not keys.weak_public_key(_by_cryptography(os.urandom(32)))


def test_a_key_with_a_small_order_public_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No clamped key has one; this stands in for a library that got it wrong.
    path = _key_file(tmp_path / "wg.key")
    monkeypatch.setattr(keys, "x25519_public", lambda raw: bytes(32))
    problem = keys.key_file_problem(str(path), must_exist=True)
    assert problem is not None and "public key is of small order" in problem
    assert keys.key_file_problem(str(path), must_exist=True, private=False) is None


def test_created_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "wg.key"
    old = os.umask(0)
    try:
        key = keys.create_key_file(str(path))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    assert keys.read_key_file(str(path)) == key
    assert os.listdir(path.parent) == ["wg.key"]  # no temporary file left behind


def test_precreated_temporary_names_are_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "state" / "wg.key"
    path.parent.mkdir(mode=0o700)
    # The names an older version used, for this process and many others.
    for pid in range(os.getpid() - 200, os.getpid() + 200):
        (path.parent / f"wg.key.tmp.{pid}").symlink_to(victim)
    key = keys.create_key_file(str(path))
    assert victim.read_text() == "untouched"
    assert keys.read_key_file(str(path)) == key


def test_a_symlink_in_place_of_the_key_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "wg.key"
    path.symlink_to(victim)
    with pytest.raises(KeyFileError, match="symbolic link"):
        keys.create_key_file(str(path))
    assert victim.read_text() == "untouched"


def test_creation_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(KeyFileError, match="others can write"):
        keys.create_key_file(str(shared / "wg.key"))
    with pytest.raises(KeyFileError, match="others can write"):
        keys.create_key_file(str(shared / "new" / "wg.key"))
    assert os.listdir(shared) == []  # nothing made in it


def test_a_key_made_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wg.key"
    theirs = keys.PrivateKey.generate()
    real_link = os.link

    def link(src: str, dst: str) -> None:
        _key_file(Path(dst), content=theirs.to_base64() + "\n")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    assert keys.create_key_file(str(path)) == theirs
    assert os.listdir(tmp_path) == ["wg.key"]
