"""Every error posaudit raises on purpose derives from :class:`PosauditError`.

Messages are whole sentences that quote the offending value and, where there is one,
say how to fix it, so that a terminal operator or an auditor can act on them directly.
"""


class PosauditError(Exception):
    """Root of all posaudit errors."""


class RecordError(PosauditError):
    """A settlement record is malformed or a field is out of range."""


class FieldRangeError(RecordError, ValueError):
    """A record field lies outside its allowed range.

    Attributes:
        field: Name of the offending field.
        value: The value that was given.
        allowed: Human-readable description of the allowed range.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"Field {field!r} is {value!r}; allowed: {allowed}.")


class EncodingError(RecordError, ValueError):
    """Bytes do not decode to a settlement record."""


class SignatureError(PosauditError):
    """A terminal's signature or key cannot be trusted."""


class BadSignatureError(SignatureError):
    """The signature does not verify against the terminal's registered key."""


class UnknownTerminalError(SignatureError, LookupError):
    """No key is registered for the terminal."""


class KeyTooSmallError(SignatureError, ValueError):
    """An RSA key is shorter than the 2048 bits posaudit requires."""


class MalformedKeyError(SignatureError, ValueError):
    """Key material cannot be parsed (wrong format, wrong passphrase, not RSA)."""


class AuditTreeError(PosauditError, ValueError):
    """An audit-tree argument or proof is invalid."""


class ProofError(AuditTreeError):
    """A proof is malformed: wrong length, index or size out of range."""


class RootMismatchError(AuditTreeError):
    """A proof is well formed but leads to another root.

    Attributes:
        expected: The trusted root.
        computed: The root the proof leads to.
    """

    def __init__(self, expected: bytes, computed: bytes) -> None:
        self.expected = expected
        self.computed = computed
        super().__init__(
            f"Proof leads to root {computed.hex()}, but the trusted root is "
            f"{expected.hex()}."
        )


class ChainError(PosauditError):
    """The chain node or a contract call failed."""


class DevnetError(ChainError):
    """The local anvil devnet could not be started or stopped."""


class BlockRejectedError(ChainError):
    """The Ledger refused a settlement block (a custom error from the contract)."""


class OutOfGasError(ChainError):
    """A transaction needed more gas than it was given; it changed nothing."""


class BlockOutOfGasError(BlockRejectedError, OutOfGasError):
    """A settlement block needed more gas than its transaction was given."""


class NodeUnreachableError(ChainError):
    """The chain node does not answer at its RPC endpoint."""


class DeploymentMismatchError(ChainError):
    """The deployment does not exist on the connected chain.

    The chain id differs from the deployment's, or an address of the deployment holds
    no contract code there.
    """


class StoreError(PosauditError):
    """The store (SQLite) cannot do what was asked."""


class RecordConflictError(StoreError):
    """A record reuses the terminal and sequence, or the id, of a different record."""


class RecordNotFoundError(StoreError, LookupError):
    """No record or block with the given id is in the store."""


class AuditError(PosauditError):
    """The audit module could not settle or reject a block's records."""


class ReceiptError(PosauditError):
    """A receipt cannot be written or read."""


class RecordNotInBlockError(ReceiptError):
    """The record is in the outbox, in no settlement block yet: it has no proof."""


class MalformedReceiptError(ReceiptError, ValueError):
    """A receipt document is not a receipt: a field is missing, mistyped or malformed.

    Attributes:
        field: Path of the offending field in the document, such as ``proof.hashes[2]``.
        problem: What is wrong with it, as a sentence.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"Receipt field {field!r}: {problem}")


class MonitorError(PosauditError):
    """The network monitor cannot measure or decide."""


class MonitorSettingsError(MonitorError, ValueError):
    """Network monitor settings are inconsistent or out of range."""


class TerminalInactiveError(SignatureError):
    """The terminal is registered but deactivated: its records are refused."""


class UploadRejectedError(PosauditError):
    """The gateway refuses a terminal's upload; the code is stable, the text is not.

    Raised by the gateway's checks and, on the terminal's side, by the terminal
    client when the gateway answers 4xx.

    Attributes:
        code: Stable UPPER_SNAKE error code, such as ``OUT_OF_RANGE``.
        field: Path of the offending field, such as ``record.amount``, or None.
        status: The HTTP status of the answer.
    """

    def __init__(
        self, code: str, message: str, field: str | None = None, status: int = 422
    ) -> None:
        self.code = code
        self.field = field
        self.status = status
        super().__init__(message)


class GatewayUnavailableError(PosauditError):
    """The gateway did not answer, or answered 5xx, on every attempt."""


class SequenceFileError(PosauditError):
    """A terminal's sequence file cannot be read or written."""
