"""Keys are slow to make: one set per test session. A chain world per module."""

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.signing import generate_key

from .world import World, running_world


@pytest.fixture(scope="session")
def terminal_key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def world(terminal_key: rsa.RSAPrivateKey) -> Iterator[World]:
    with running_world(terminal_key) as world:
        yield world
