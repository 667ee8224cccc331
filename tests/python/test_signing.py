"""Terminal keys and signatures."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from posaudit.exceptions import (
    BadSignatureError,
    KeyTooSmallError,
    MalformedKeyError,
    UnknownTerminalError,
)
from posaudit.signing import (
    KEY_BITS,
    SIGNATURE_LENGTH,
    TerminalKeyring,
    load_private_key,
    load_public_key,
    public_key_pem,
    public_numbers,
    save_key_pair,
    sign,
    verify,
)

RECORD = b"\x01" * 133


def test_sign_then_verify_accepts(terminal_key: rsa.RSAPrivateKey) -> None:
    signature = sign(terminal_key, RECORD)

    assert len(signature) == SIGNATURE_LENGTH
    verify(terminal_key.public_key(), RECORD, signature)


def test_verify_tampered_record_raises(terminal_key: rsa.RSAPrivateKey) -> None:
    signature = sign(terminal_key, RECORD)

    with pytest.raises(BadSignatureError):
        verify(terminal_key.public_key(), RECORD[:-1] + b"\x02", signature)


def test_verify_flipped_signature_bit_raises(terminal_key: rsa.RSAPrivateKey) -> None:
    signature = bytearray(sign(terminal_key, RECORD))
    signature[100] ^= 0x01

    with pytest.raises(BadSignatureError):
        verify(terminal_key.public_key(), RECORD, bytes(signature))


def test_keyring_rejects_other_terminals_signature(
    terminal_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    keyring = TerminalKeyring({"TERM0001": terminal_key.public_key()})

    with pytest.raises(BadSignatureError):
        keyring.verify("TERM0001", RECORD, sign(other_key, RECORD))


def test_keyring_unknown_terminal_raises(terminal_key: rsa.RSAPrivateKey) -> None:
    keyring = TerminalKeyring()

    with pytest.raises(UnknownTerminalError, match="TERM0009"):
        keyring.verify("TERM0009", RECORD, sign(terminal_key, RECORD))


def test_keyring_refuses_1024_bit_key() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(KeyTooSmallError, match="1024"):
        TerminalKeyring().add("TERM0001", small.public_key())


def test_key_pair_round_trips_through_encrypted_pem(
    terminal_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    private_path, public_path = save_key_pair(terminal_key, tmp_path, "t1", b"secret")

    loaded = load_private_key(private_path.read_bytes(), b"secret")

    assert b"ENCRYPTED" in private_path.read_bytes()
    assert private_path.stat().st_mode & 0o077 == 0
    assert loaded.private_numbers() == terminal_key.private_numbers()
    assert load_public_key(public_path.read_bytes()).key_size == KEY_BITS


def test_wrong_passphrase_raises_malformed_key(
    terminal_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    private_path, _ = save_key_pair(terminal_key, tmp_path, "t1", b"secret")

    with pytest.raises(MalformedKeyError, match="passphrase"):
        load_private_key(private_path.read_bytes(), b"wrong")


@pytest.mark.parametrize("pem", [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\n"])
def test_garbage_public_key_raises_malformed_key(pem: bytes) -> None:
    with pytest.raises(MalformedKeyError):
        load_public_key(pem)


def test_non_rsa_public_key_raises_malformed_key() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public_key_pem(ec_key)  # type: ignore[arg-type]

    with pytest.raises(MalformedKeyError, match="RSA"):
        load_public_key(pem)


def test_public_numbers_give_256_byte_modulus(terminal_key: rsa.RSAPrivateKey) -> None:
    numbers = public_numbers(terminal_key.public_key())

    assert len(numbers.modulus) == 256
    assert numbers.exponent == b"\x01\x00\x01"
