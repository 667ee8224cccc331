"""Terminal keys and signatures: RSA-2048, PKCS#1 v1.5 over SHA-256 of the record.

Every terminal holds its own key pair. The private key stays on the terminal, stored as
PEM encrypted with a passphrase; the public key is registered on chain, where the
Ledger's registry keeps its modulus and exponent for the dispute check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from posaudit.exceptions import (
    BadSignatureError,
    KeyTooSmallError,
    MalformedKeyError,
    UnknownTerminalError,
)

KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
SIGNATURE_LENGTH = KEY_BITS // 8

_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA256()


def generate_key() -> rsa.RSAPrivateKey:
    """Create a new RSA-2048 terminal key."""
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)


def _require_rsa_2048(key: object) -> None:
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise MalformedKeyError(f"Expected an RSA key, got {type(key).__name__}.")

    if key.key_size < KEY_BITS:
        raise KeyTooSmallError(
            f"RSA key has {key.key_size} bits; terminals need at least {KEY_BITS}."
        )


def private_key_pem(key: rsa.RSAPrivateKey, passphrase: bytes) -> bytes:
    """Serialise a private key as PKCS#8 PEM encrypted with ``passphrase``.

    Raises:
        ValueError: ``passphrase`` is empty.
    """
    if not passphrase:
        raise ValueError("A terminal's private key must be stored with a passphrase.")

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """Serialise the public half of ``key`` as SubjectPublicKeyInfo PEM."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, passphrase: bytes) -> rsa.RSAPrivateKey:
    """Parse an encrypted private key PEM.

    Raises:
        MalformedKeyError: Not PEM, wrong passphrase, or not an RSA key.
        KeyTooSmallError: The key is shorter than 2048 bits.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise MalformedKeyError(
            f"Cannot load the terminal's private key: {err} "
            "Check the file and the passphrase."
        ) from err

    _require_rsa_2048(key)
    return key  # type: ignore[return-value]


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """Parse a public key PEM.

    Raises:
        MalformedKeyError: Not PEM or not an RSA key.
        KeyTooSmallError: The key is shorter than 2048 bits.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise MalformedKeyError(f"Cannot load a public key: {err}") from err

    _require_rsa_2048(key)
    return key  # type: ignore[return-value]


def save_key_pair(
    key: rsa.RSAPrivateKey, directory: Path, name: str, passphrase: bytes
) -> tuple[Path, Path]:
    """Write ``<name>.key.pem`` (encrypted, mode 0600) and ``<name>.pub.pem``.

    Returns:
        The paths of the private and the public key file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}.key.pem"
    public_path = directory / f"{name}.pub.pem"
    private_path.touch(mode=0o600, exist_ok=True)
    private_path.write_bytes(private_key_pem(key, passphrase))
    public_path.write_bytes(public_key_pem(key))
    return private_path, public_path


def sign(key: rsa.RSAPrivateKey, encoding: bytes) -> bytes:
    """Sign an encoded record: RSA PKCS#1 v1.5 over its SHA-256 digest."""
    return key.sign(encoding, _PADDING, _HASH)


def verify(public_key: rsa.RSAPublicKey, encoding: bytes, signature: bytes) -> None:
    """Check a terminal's signature over an encoded record.

    Raises:
        BadSignatureError: The signature does not match the record and key.
    """
    try:
        public_key.verify(signature, encoding, _PADDING, _HASH)
    except InvalidSignature as err:
        raise BadSignatureError(
            f"Signature {signature[:8].hex()}… does not verify for record digest "
            "under the terminal's registered key."
        ) from err


@dataclass(frozen=True)
class RsaPublicNumbers:
    """A public key as the on-chain registry and OpenZeppelin's RSA library hold it."""

    modulus: bytes
    exponent: bytes


def public_numbers(key: rsa.RSAPublicKey) -> RsaPublicNumbers:
    """Big-endian modulus (256 bytes for RSA-2048) and minimal-length exponent."""
    numbers = key.public_numbers()
    modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    exponent = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return RsaPublicNumbers(modulus=modulus, exponent=exponent)


class TerminalKeyring:
    """Public keys of registered terminals, by terminal id.

    The gateway fills it from the registry; it answers one question: did this terminal
    sign these bytes?
    """

    def __init__(self, keys: Mapping[str, rsa.RSAPublicKey] | None = None) -> None:
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        for terminal_id, key in (keys or {}).items():
            self.add(terminal_id, key)

    def add(self, terminal_id: str, key: rsa.RSAPublicKey) -> None:
        """Register ``key`` for ``terminal_id`` after checking it is RSA-2048."""
        _require_rsa_2048(key)
        self._keys[terminal_id] = key

    def remove(self, terminal_id: str) -> None:
        """Forget a terminal (deactivated or rotated out)."""
        self._keys.pop(terminal_id, None)

    def key_of(self, terminal_id: str) -> rsa.RSAPublicKey:
        """Return the terminal's key.

        Raises:
            UnknownTerminalError: No key is registered for ``terminal_id``.
        """
        try:
            return self._keys[terminal_id]
        except KeyError:
            raise UnknownTerminalError(
                f"Terminal {terminal_id!r} has no registered key; register it first."
            ) from None

    def verify(self, terminal_id: str, encoding: bytes, signature: bytes) -> None:
        """Check that ``terminal_id`` signed ``encoding``.

        Raises:
            UnknownTerminalError: The terminal is not registered.
            BadSignatureError: The signature does not verify.
        """
        verify(self.key_of(terminal_id), encoding, signature)

    def __contains__(self, terminal_id: object) -> bool:
        return terminal_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)
