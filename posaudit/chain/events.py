"""Contract events read straight from raw JSON-RPC logs.

web3.py turns a receipt into attribute dictionaries and runs every log through its
generic ABI decoder; for the receipt of a 512-record block that took longer (about
0.14 s here) than the node took to mine the block (0.02 s). The events the hot path
reads have static fields only, so each field is one fixed 32-byte word of a topic or
of the data, and :class:`EventReader` slices it out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eth_utils import keccak

WORD = 32

Decoder = Callable[[bytes], Any]


def _uint(word: bytes) -> int:
    return int.from_bytes(word, "big")


def _int(word: bytes) -> int:
    return int.from_bytes(word, "big", signed=True)


def _bool(word: bytes) -> bool:
    return word[-1] != 0


def _address(word: bytes) -> str:
    return "0x" + word[12:].hex()


def _fixed_bytes(size: int) -> Decoder:
    return lambda word: word[:size]


def _decoder(abi_type: str) -> Decoder:
    """The decoder of one static ABI type's 32-byte word.

    Raises:
        ValueError: The type is dynamic (``bytes``, ``string``, arrays, tuples): its
            value is not one word.
    """
    if abi_type.startswith("uint"):
        return _uint

    if abi_type.startswith("int"):
        return _int

    if abi_type == "bool":
        return _bool

    if abi_type == "address":
        return _address

    if abi_type.startswith("bytes") and abi_type[5:].isdigit():
        return _fixed_bytes(int(abi_type[5:]))

    raise ValueError(
        f"EventReader reads static fields only; {abi_type!r} is not one word."
    )


class EventReader:
    """Decodes one event of a contract's ABI from raw logs.

    Values come out as eth-abi gives them, except addresses, which are lowercase
    0x-prefixed hex (no checksum: it costs a Keccak-256 per address).

    Args:
        abi: The contract's ABI.
        name: The event's name.

    Raises:
        ValueError: The ABI has no such event, or one of its fields is dynamic.
    """

    def __init__(self, abi: Sequence[Mapping[str, Any]], name: str) -> None:
        entries = [e for e in abi if e.get("type") == "event" and e["name"] == name]
        if len(entries) != 1:
            raise ValueError(f"The ABI has {len(entries)} events named {name!r}.")

        inputs = entries[0]["inputs"]
        signature = f"{name}({','.join(item['type'] for item in inputs)})"
        self.name = name
        self.topic = "0x" + keccak(text=signature).hex()
        fields = [(i["name"], _decoder(i["type"]), i["indexed"]) for i in inputs]
        self._topics = [(name, decode) for name, decode, indexed in fields if indexed]
        self._data = [(name, decode) for name, decode, indexed in fields if not indexed]

    def decode(self, log: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of one log of this event, by name."""
        fields: dict[str, Any] = {}
        for (name, decode), topic in zip(self._topics, log["topics"][1:], strict=True):
            fields[name] = decode(bytes.fromhex(topic[2:]))

        data = bytes.fromhex(log["data"][2:])
        for k, (name, decode) in enumerate(self._data):
            fields[name] = decode(data[k * WORD : (k + 1) * WORD])

        return fields

    def decode_all(
        self, logs: Iterable[Mapping[str, Any]], address: str
    ) -> list[dict[str, Any]]:
        """The fields of every log of this event that ``address`` emitted, in order."""
        emitter = address.lower()
        return [
            self.decode(log)
            for log in logs
            if log["topics"]
            and log["topics"][0] == self.topic
            and log["address"].lower() == emitter
        ]
