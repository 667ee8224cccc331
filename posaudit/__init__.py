"""posaudit: auditable POS settlement on an EVM chain."""

__version__ = "0.1.0"
