"""Keys are slow to make: one set per test session."""

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.signing import generate_key


@pytest.fixture(scope="session")
def terminal_key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return generate_key()
