"""The one error tree of prov.

Every failure a user can cause or meet is a ``ProvError``. The CLI boundary
(``provisioner.cli.main``) turns them into a one-line message and an exit code:
``UsageError`` (bad input) exits 2, ``OperationalError`` exits 1. Anything
else is a bug and shows a traceback only with ``--debug``.

The whole tree (tests/test_error_tree.py checks this drawing against the code):

    ProvError                    errors                  raised on purpose; exit_code 1
    |-- UsageError               errors                  bad input; exit 2
    |   |-- UnknownModelError    errors                  --model is no id, alias or path
    |   |-- ConfigError          errors                  config.json / safetensors header
    |   |-- CredentialsError     errors                  no (or rejected) cloud credentials
    |   |   `-- CredentialsProblem  pricing.aws_region   the chain failed in a refresh worker
    |   `-- DataError            errors                  a price or data file
    |       |-- PayloadError     daemon.events           an SQS/IMDS notice (logged skip)
    |       `-- MalformedPriceDocument  pricing.aws_price_list  one Price List document
    `-- OperationalError         errors                  outside failure; exit 1
        |-- NoFeasibleShapeError errors                  no shape runs the request
        |-- FetchError           pricing.http_json       a price endpoint failed
        |-- ImdsError            daemon.monitors.imds    metadata service unreachable
        |-- CapacityError        daemon.capacity         EC2 failed; another pool won't help
        |-- CapacityUnavailable  daemon.capacity         one pool out of capacity: try next
        `-- NoCapacity           daemon.capacity         every pool refused the replacement

Classes live beside the adapter they describe when only that adapter raises them; the
ones every layer uses live here (layer 0, importing nothing).

Not in the tree, on purpose: internal control flow that never reaches the CLI.

    Aborted                daemon.handling.state  the daemon is being killed: unwinds a
                           flow without acknowledging anything; caught by the worker
                           (service._work). Deliberately not a ProvError, so that no
                           ``except ProvError`` on the way can swallow it.
    FakeSqsError           daemon.fakes.sqs       an AWS error as the in-memory SQS queue
                           answers it (botocore's ``response["Error"]["Code"]`` shape),
                           for tests: it stands for a service's error, not prov's.

Standard exceptions prov raises on purpose are few and listed with their reasons in
tests/test_error_tree.py: ``typer.Exit`` at the CLI boundary, ``ValueError`` where a
library's callback protocol asks for it (pydantic validators, json's parse_constant) or
where it is caught in the same function, and guards against bugs (unreachable branches).
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


class CredentialsError(UsageError):
    """Missing or rejected cloud credentials: configuration the user must fix, like a bad
    flag, so exit 2 for every command that talks to a cloud (provisioner/aws_credentials.py)."""


class DataError(UsageError):
    """A price file, data file or notice payload that cannot be parsed."""


class OperationalError(ProvError):
    """Something outside the user's input failed: cloud API, cluster, I/O. Exit code 1."""


class NoFeasibleShapeError(OperationalError):
    """No shape in the offers can run the request. Carries the result to still print it."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
