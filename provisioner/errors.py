"""The one error tree of prov.

Every failure a user can cause or meet is a ``ProvError``. The CLI boundary
(``provisioner.cli.main``) turns them into a one-line message and an exit code:
``UsageError`` (bad input) exits 2, ``OperationalError`` exits 1. Anything
else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class ProvError(Exception):
    """Base of every error prov raises on purpose."""

    exit_code = 1


class UsageError(ProvError):
    """Bad input: a flag, a config.json, a price file. Exit code 2."""

    exit_code = 2


class UnknownModelError(UsageError):
    """A --model that is neither a catalog id, an alias nor a readable path."""


class ConfigError(UsageError):
    """A config.json (or a safetensors header) that is malformed or incomplete."""


class DataError(UsageError):
    """A price file or data file that cannot be parsed."""


class OperationalError(ProvError):
    """Something outside the user's input failed: cloud API, cluster, I/O. Exit code 1."""


class NoFeasibleShapeError(OperationalError):
    """No shape in the offers can run the request. Carries the result to still print it."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
