"""The upload format: a signed record as JSON, from the terminal to the gateway.

One upload is a JSON object with exactly two members::

    {"record": {"chain_id": 31337, "ledger": "0x…", "record_id": "<32 hex digits>",
                "terminal_id": "TERM0001", "sequence": 1, "payer": "0x…",
                "merchant": "0x…", "amount": 1000, "currency": "EUR",
                "timestamp": 1900000000, "valid_until": 1900003600,
                "goods_category": 0, "operator_id": 0},
     "signature": "0x<the terminal's RSA signature over the 133-byte encoding>"}

A batch is ``{"records": [upload, …]}`` with 1 to :data:`MAX_BATCH_RECORDS` uploads.

Reading is strict, so that what is stored is exactly what the terminal meant: the body
is UTF-8 JSON without duplicate keys, NaN or Infinity; every record field is present
and no other; integers are JSON integers (``true``, ``1.0``, ``"100"`` are not) within
the ranges of :mod:`posaudit.records`; hex strings have their exact lengths. The first
problem found is raised as :class:`~posaudit.exceptions.UploadRejectedError` with a
stable code (see :data:`ERROR_CODES`), the field's path and a sentence that names the
field and what it allows.

Integers are checked before anything is converted: an integer literal longer than
:data:`_MAX_INTEGER_DIGITS` digits is never turned into a Python int.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from posaudit.exceptions import FieldRangeError, UploadRejectedError
from posaudit.records import (
    CURRENCIES,
    MAX_AMOUNT,
    MAX_UINT16,
    MAX_UINT32,
    MAX_UINT64,
    Domain,
    SettlementRecord,
    SignedRecord,
)

MAX_RECORD_BODY = 16 * 1024
"""Bytes of one upload's body; a signed record takes about 900."""

MAX_BATCH_BODY = 2 * 1024 * 1024
"""Bytes of a batch body: 1,000 uploads with room for indentation."""

MAX_BATCH_RECORDS = 1_000
"""Uploads in one batch."""

MAX_SIGNATURE_BYTES = 1_024
"""Longest signature read (RSA-8192); the terminal's key fixes the exact length."""

RECORD_FIELDS = (
    "chain_id",
    "ledger",
    "record_id",
    "terminal_id",
    "sequence",
    "payer",
    "merchant",
    "amount",
    "currency",
    "timestamp",
    "valid_until",
    "goods_category",
    "operator_id",
)
UPLOAD_FIELDS = ("record", "signature")
BATCH_FIELDS = ("records",)


@dataclass(frozen=True)
class ErrorCode:
    """One stable error code of the gateway.

    Attributes:
        status: HTTP status the gateway answers with.
        meaning: When it is given.
    """

    status: int
    meaning: str


ERROR_CODES: dict[str, ErrorCode] = {
    "EMPTY_BODY": ErrorCode(400, "The body is empty."),
    "BODY_NOT_UTF8": ErrorCode(400, "The body is not UTF-8."),
    "INVALID_JSON": ErrorCode(
        400, "The body is not JSON, nests too deep, or uses NaN or Infinity."
    ),
    "DUPLICATE_KEY": ErrorCode(400, "A JSON object repeats a key."),
    "UNKNOWN_TERMINAL": ErrorCode(403, "No key is registered for the terminal."),
    "TERMINAL_INACTIVE": ErrorCode(403, "The terminal is deactivated."),
    "RECORD_NOT_FOUND": ErrorCode(404, "No record with this id is in the store."),
    "NOT_FOUND": ErrorCode(404, "No such path."),
    "METHOD_NOT_ALLOWED": ErrorCode(405, "The path does not take this method."),
    "RECORD_CONFLICT": ErrorCode(
        409,
        "Another record holds this record id or this terminal and sequence number.",
    ),
    "RECEIPT_NOT_READY": ErrorCode(
        409, "The record is in the outbox, in no settlement block yet."
    ),
    "BODY_TOO_LARGE": ErrorCode(413, "The body is longer than the endpoint allows."),
    "UNSUPPORTED_MEDIA_TYPE": ErrorCode(
        415, "The Content-Type is not application/json (UTF-8)."
    ),
    "WRONG_TYPE": ErrorCode(422, "A value has the wrong JSON type."),
    "MISSING_FIELD": ErrorCode(422, "A required field is missing."),
    "UNKNOWN_FIELD": ErrorCode(422, "A field is not part of the format."),
    "OUT_OF_RANGE": ErrorCode(422, "A number or code lies outside its range."),
    "BAD_FORMAT": ErrorCode(422, "A string is not of its form (hex, 0x, ASCII)."),
    "BAD_LENGTH": ErrorCode(422, "A string or byte string has the wrong length."),
    "WRONG_DOMAIN": ErrorCode(
        422, "The record is for another chain or Ledger than this gateway's."
    ),
    "BAD_SIGNATURE": ErrorCode(
        422, "The signature does not verify under the terminal's registered key."
    ),
    "BATCH_EMPTY": ErrorCode(422, "A batch has no records."),
    "BATCH_TOO_LARGE": ErrorCode(422, "A batch has more records than allowed."),
    "INTERNAL_ERROR": ErrorCode(500, "The gateway failed; nothing was stored."),
    "REGISTRY_UNAVAILABLE": ErrorCode(
        503, "The terminal registry cannot be read to look up a new terminal."
    ),
    "STORE_UNAVAILABLE": ErrorCode(503, "The store cannot be written or read."),
    "CHAIN_UNAVAILABLE": ErrorCode(503, "The chain node does not answer."),
    "MONITOR_UNAVAILABLE": ErrorCode(503, "The network monitor does not answer."),
}
"""Every code the gateway answers with; the codes never change meaning."""

_MAX_INTEGER_DIGITS = 30
# \Z, not $: $ also matches before a final newline, which bytes.fromhex refuses.
_HEX = re.compile(r"^[0-9a-fA-F]*\Z")
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]*\Z")


def rejected(code: str, message: str, field: str | None = None) -> UploadRejectedError:
    """An :class:`UploadRejectedError` with the status of ``code``."""
    return UploadRejectedError(code, message, field, ERROR_CODES[code].status)


class _LongInteger:
    """An integer literal too long to be in any range: kept as its digits."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))
        self.negative = text.startswith("-")


class _NonInteger:
    """A JSON number with a fraction or an exponent."""

    def __init__(self, text: str) -> None:
        self.text = text


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _integer_literal(text: str) -> int | _LongInteger:
    if len(text) > _MAX_INTEGER_DIGITS:
        return _LongInteger(text)

    return int(text)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(key)

        document[key] = value

    return document


def parse_json(body: bytes) -> object:
    """Parse a request body strictly.

    Args:
        body: The raw bytes; the caller bounds their length.

    Returns:
        The document. Numbers with a fraction or exponent and integer literals of
        more than 30 digits come back as opaque values that no range accepts.

    Raises:
        UploadRejectedError: ``EMPTY_BODY``, ``BODY_NOT_UTF8``, ``INVALID_JSON`` or
            ``DUPLICATE_KEY``.
    """
    if not body.strip():
        raise rejected("EMPTY_BODY", "The body is empty; send one JSON object.")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise rejected(
            "BODY_NOT_UTF8",
            f"The body is not UTF-8: byte {err.start} is 0x{body[err.start]:02x}.",
        ) from err

    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_integer_literal,
            parse_float=_NonInteger,
            parse_constant=_no_constants,
        )
    except _DuplicateKeyError as err:
        raise rejected(
            "DUPLICATE_KEY",
            f"Key {_shown(err.key)} appears twice in one JSON object; "
            "send each key once.",
            err.key,
        ) from err
    except RecursionError as err:
        raise rejected(
            "INVALID_JSON", "The body nests arrays or objects too deep."
        ) from err
    except ValueError as err:
        raise rejected("INVALID_JSON", f"The body is not valid JSON: {err}.") from err


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "null"

    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"

    if isinstance(value, _NonInteger):
        return f"{_shown(value.text)[1:-1]} (a number with a fraction or exponent)"

    if isinstance(value, _LongInteger):
        return f"an integer of {value.digits} digits"

    if isinstance(value, int):
        return str(value)

    if isinstance(value, str):
        return f"the string {_shown(value)}"

    if isinstance(value, list):
        return "an array"

    return "an object"


def _require_object(value: object, field: str | None, members: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        where = "The body" if field is None else f"Field {field!r}"
        raise rejected(
            "WRONG_TYPE",
            f"{where} must be a JSON object with {members}; got {_kind(value)}.",
            field,
        )

    return value


def _require_members(
    document: Mapping[str, Any], names: Sequence[str], prefix: str
) -> None:
    for key in document:
        if key not in names:
            raise rejected(
                "UNKNOWN_FIELD",
                f"Field {prefix + key!r} is not part of the upload format; the "
                f"fields are {', '.join(names)}.",
                prefix + key,
            )

    for name in names:
        if name not in document:
            raise rejected(
                "MISSING_FIELD", f"Field {prefix + name!r} is missing.", prefix + name
            )


def _integer(document: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = document[name]
    # The common case first; anything else takes the checks that name the problem.
    if type(value) is int and low <= value <= high:
        return value

    return _checked_integer(document, name, low, high)


def _checked_integer(
    document: Mapping[str, Any], name: str, low: int, high: int
) -> int:
    field = f"record.{name}"
    value = document[name]
    allowed = f"an integer from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | _LongInteger):
        raise rejected(
            "WRONG_TYPE",
            f"Field {field!r} must be {allowed}; got {_kind(value)}.",
            field,
        )

    if isinstance(value, _LongInteger) or not low <= value <= high:
        raise rejected(
            "OUT_OF_RANGE",
            f"Field {field!r} must be {allowed}; got {_kind(value)}.",
            field,
        )

    return value


def _text(value: object, field: str, form: str) -> str:
    if not isinstance(value, str):
        raise rejected(
            "WRONG_TYPE",
            f"Field {field!r} must be a string, {form}; got {_kind(value)}.",
            field,
        )

    return value


def _hex_digits(value: str, field: str, form: str, prefixed: bool) -> str:
    digits = value
    if value[:2] in ("0x", "0X"):
        digits = value[2:]
    elif prefixed:
        raise rejected(
            "BAD_FORMAT",
            f"Field {field!r} must be {form}, starting with 0x; got {_shown(value)}.",
            field,
        )

    if not _HEX.match(digits):
        raise rejected(
            "BAD_FORMAT",
            f"Field {field!r} must be {form}; got {_shown(value)}, which is not hex.",
            field,
        )

    return digits


def _fixed_hex(document: Mapping[str, Any], name: str, size: int, form: str) -> bytes:
    value = document[name]
    if type(value) is str and len(value) == 2 * size + 2 and value[:2] == "0x":
        digits = value[2:]
        if _HEX.match(digits):
            return bytes.fromhex(digits)

    return _checked_fixed_hex(document, name, size, form)


def _checked_fixed_hex(
    document: Mapping[str, Any], name: str, size: int, form: str
) -> bytes:
    field = f"record.{name}"
    prefixed = name != "record_id"
    digits = _hex_digits(_text(document[name], field, form), field, form, prefixed)
    if len(digits) != 2 * size:
        raise rejected(
            "BAD_LENGTH",
            f"Field {field!r} must be {form}; got {len(digits)} hex digits.",
            field,
        )

    return bytes.fromhex(digits)


def _terminal_id(document: Mapping[str, Any]) -> str:
    field = "record.terminal_id"
    form = "8 printable ASCII characters (0x21 to 0x7e)"
    value = _text(document["terminal_id"], field, form)
    if not _PRINTABLE_ASCII.match(value):
        raise rejected(
            "BAD_FORMAT",
            f"Field {field!r} must be {form}; {_shown(value)} has other characters.",
            field,
        )

    if len(value) != 8:
        raise rejected(
            "BAD_LENGTH",
            f"Field {field!r} must be {form}; got {len(value)} characters.",
            field,
        )

    return value


def _currency(document: Mapping[str, Any]) -> str:
    field = "record.currency"
    form = f"one of {', '.join(sorted(CURRENCIES))}"
    value = _text(document["currency"], field, form)
    if value not in CURRENCIES:
        raise rejected(
            "OUT_OF_RANGE",
            f"Field {field!r} must be {form}; got {_shown(value)}.",
            field,
        )

    return value


def signature_bytes(value: object) -> bytes:
    """Read the ``signature`` member: 0x-prefixed hex of 1 to 1,024 bytes.

    Raises:
        UploadRejectedError: ``WRONG_TYPE``, ``BAD_FORMAT`` or ``BAD_LENGTH``.
    """
    form = "0x-prefixed hex of the RSA signature (256 bytes for RSA-2048)"
    digits = _hex_digits(_text(value, "signature", form), "signature", form, True)
    if len(digits) % 2:
        raise rejected(
            "BAD_FORMAT",
            f"Field 'signature' must be {form}; got an odd number of hex digits.",
            "signature",
        )

    if not 0 < len(digits) // 2 <= MAX_SIGNATURE_BYTES:
        raise rejected(
            "BAD_LENGTH",
            f"Field 'signature' must be {form}; got {len(digits) // 2} bytes.",
            "signature",
        )

    return bytes.fromhex(digits)


def record_id_bytes(value: object, field: str = "record_id") -> bytes:
    """Read a record id: 32 hex digits, with or without 0x.

    Raises:
        UploadRejectedError: ``WRONG_TYPE``, ``BAD_FORMAT`` or ``BAD_LENGTH``.
    """
    form = "32 hex digits (16 bytes)"
    digits = _hex_digits(_text(value, field, form), field, form, False)
    if len(digits) != 32:
        raise rejected(
            "BAD_LENGTH",
            f"Field {field!r} must be {form}; got {len(digits)} hex digits.",
            field,
        )

    return bytes.fromhex(digits)


def read_record(document: object, domain: Domain | None = None) -> SettlementRecord:
    """Check the ``record`` member of an upload and build the record.

    Args:
        document: The parsed value of ``record``.
        domain: The gateway's chain and Ledger; a record for another is refused.

    Raises:
        UploadRejectedError: The first problem found, in field order.
    """
    fields = _require_object(document, "record", "the record's fields")
    _require_members(fields, RECORD_FIELDS, "record.")
    address = "a 20-byte address: 0x and 40 hex digits"
    chain_id = _integer(fields, "chain_id", 1, MAX_UINT64)
    ledger = _fixed_hex(fields, "ledger", 20, address)
    record_id = _fixed_hex(fields, "record_id", 16, "32 hex digits (16 bytes)")
    terminal_id = _terminal_id(fields)
    sequence = _integer(fields, "sequence", 1, MAX_UINT64)
    payer = _fixed_hex(fields, "payer", 20, address)
    merchant = _fixed_hex(fields, "merchant", 20, address)
    amount = _integer(fields, "amount", 1, MAX_AMOUNT)
    currency = _currency(fields)
    timestamp = _integer(fields, "timestamp", 0, MAX_UINT64)
    valid_until = _integer(fields, "valid_until", 0, MAX_UINT64)
    if valid_until < timestamp:
        raise rejected(
            "OUT_OF_RANGE",
            "Field 'record.valid_until' must be an integer from the record's "
            f"timestamp ({timestamp}) to {MAX_UINT64}; got {valid_until}.",
            "record.valid_until",
        )

    goods_category = _integer(fields, "goods_category", 0, MAX_UINT16)
    operator_id = _integer(fields, "operator_id", 0, MAX_UINT32)
    if domain is not None:
        _check_domain(domain, chain_id, "0x" + ledger.hex())

    try:
        return SettlementRecord(
            domain=Domain(chain_id, "0x" + ledger.hex()),
            record_id=record_id,
            terminal_id=terminal_id,
            sequence=sequence,
            payer="0x" + payer.hex(),
            merchant="0x" + merchant.hex(),
            amount=amount,
            currency=currency,
            timestamp=timestamp,
            valid_until=valid_until,
            goods_category=goods_category,
            operator_id=operator_id,
        )
    except FieldRangeError as err:
        raise rejected("OUT_OF_RANGE", str(err), f"record.{err.field}") from err


def _check_domain(domain: Domain, chain_id: int, ledger: str) -> None:
    expected = f"chain {domain.chain_id} with Ledger {domain.ledger}"
    if chain_id != domain.chain_id:
        raise rejected(
            "WRONG_DOMAIN",
            f"Field 'record.chain_id' is {chain_id}, but this gateway settles on "
            f"{expected}; sign the record for this deployment.",
            "record.chain_id",
        )

    if ledger != domain.ledger:
        raise rejected(
            "WRONG_DOMAIN",
            f"Field 'record.ledger' is {ledger}, but this gateway settles on "
            f"{expected}; sign the record for this deployment.",
            "record.ledger",
        )


def read_upload(document: object, domain: Domain | None = None) -> SignedRecord:
    """Check one upload (``{"record": …, "signature": …}``) and build the record.

    The signature is read, not verified: that needs the terminal's key.

    Raises:
        UploadRejectedError: The first problem found.
    """
    upload = _require_object(document, None, "the members 'record' and 'signature'")
    _require_members(upload, UPLOAD_FIELDS, "")
    record = read_record(upload["record"], domain)
    return SignedRecord(record, signature_bytes(upload["signature"]))


def read_batch(document: object, max_records: int = MAX_BATCH_RECORDS) -> list[object]:
    """Check the shape of a batch and return its uploads, each still unchecked.

    Raises:
        UploadRejectedError: ``WRONG_TYPE``, ``UNKNOWN_FIELD``, ``MISSING_FIELD``,
            ``BATCH_EMPTY`` or ``BATCH_TOO_LARGE``.
    """
    batch = _require_object(document, None, "the member 'records'")
    _require_members(batch, BATCH_FIELDS, "")
    uploads = batch["records"]
    if not isinstance(uploads, list):
        raise rejected(
            "WRONG_TYPE",
            f"Field 'records' must be an array of uploads; got {_kind(uploads)}.",
            "records",
        )

    if not uploads:
        raise rejected(
            "BATCH_EMPTY",
            f"Field 'records' must hold 1 to {max_records} uploads; it is empty.",
            "records",
        )

    if len(uploads) > max_records:
        raise rejected(
            "BATCH_TOO_LARGE",
            f"Field 'records' must hold 1 to {max_records} uploads; it holds "
            f"{len(uploads)}. Split the batch.",
            "records",
        )

    return uploads


def upload_document(signed: SignedRecord) -> dict[str, Any]:
    """The upload of a signed record, as a JSON-ready object."""
    record = signed.record
    return {
        "record": {
            "chain_id": record.domain.chain_id,
            "ledger": record.domain.ledger,
            "record_id": record.record_id.hex(),
            "terminal_id": record.terminal_id,
            "sequence": record.sequence,
            "payer": record.payer,
            "merchant": record.merchant,
            "amount": record.amount,
            "currency": record.currency,
            "timestamp": record.timestamp,
            "valid_until": record.valid_until,
            "goods_category": record.goods_category,
            "operator_id": record.operator_id,
        },
        "signature": "0x" + signed.signature.hex(),
    }


def _uint(low: int, high: int, about: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, "description": about}


def _address(about: str) -> dict[str, Any]:
    return {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": about}


RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(RECORD_FIELDS),
    "properties": {
        "chain_id": _uint(1, MAX_UINT64, "EIP-155 chain id of the gateway's chain."),
        "ledger": _address("Address of the gateway's Ledger contract."),
        "record_id": {
            "type": "string",
            "pattern": "^(0x)?[0-9a-fA-F]{32}$",
            "description": "16-byte id chosen by the terminal, as 32 hex digits.",
        },
        "terminal_id": {
            "type": "string",
            "pattern": "^[\\x21-\\x7e]{8}$",
            "description": "8 printable ASCII characters (ISO 8583 field 41).",
        },
        "sequence": _uint(1, MAX_UINT64, "Terminal sequence number."),
        "payer": _address("Payer account."),
        "merchant": _address("Merchant account."),
        "amount": _uint(1, MAX_AMOUNT, "Minor units."),
        "currency": {"type": "string", "enum": sorted(CURRENCIES)},
        "timestamp": _uint(0, MAX_UINT64, "When the payment was taken, Unix seconds."),
        "valid_until": _uint(
            0, MAX_UINT64, "Lock time, Unix seconds; at least the timestamp."
        ),
        "goods_category": _uint(0, MAX_UINT16, "Index into the Ledger's age rules."),
        "operator_id": _uint(0, MAX_UINT32, "Cashier or operator at the terminal."),
    },
}
"""JSON Schema of ``record`` (integers must be JSON integers, never strings)."""

UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(UPLOAD_FIELDS),
    "properties": {
        "record": RECORD_SCHEMA,
        "signature": {
            "type": "string",
            "pattern": "^0x([0-9a-fA-F]{2})+$",
            "description": (
                "RSA PKCS#1 v1.5 SHA-256 signature over the record's 133-byte "
                "encoding: 256 bytes for an RSA-2048 key."
            ),
        },
    },
}
"""JSON Schema of one upload; the body may not repeat keys."""

BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(BATCH_FIELDS),
    "properties": {
        "records": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_RECORDS,
            "items": UPLOAD_SCHEMA,
        }
    },
}
"""JSON Schema of a batch."""
