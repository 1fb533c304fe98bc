"""One rule for missing or rejected AWS credentials, for every command that talks to AWS.

``prov prices refresh`` (aws), ``prov deploy`` and ``prov destroy`` of an aws-eks stack, and
``prov daemon`` need AWS credentials. Having none, or keys AWS does not accept, is
configuration the user must fix, like a bad flag: errors.py's rule for that is a UsageError,
exit 2 (an outage, which a retry may fix, is an OperationalError, exit 1). So each of them
raises ``CredentialsError`` with the same one line, naming what is missing and the usual ways
to provide it. botocore is imported inside the functions: only those commands need it.
"""

from __future__ import annotations

from typing import Any

from provisioner.errors import CredentialsError

HOW = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
    "keys), write ~/.aws/credentials (`aws configure`), or set AWS_PROFILE=NAME (IAM Identity "
    "Center: `aws configure sso`, then `aws sso login --profile NAME`)"
)
#: botocore's exceptions (by class name) for a credential chain that found nothing usable.
CHAIN_FAILURES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "TokenRetrievalError",
        "SSOError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "ProfileNotFound",
    }
)
#: AWS error codes for credentials that were found but are not accepted (unknown, wrong
#: secret, expired). A permission the identity lacks (AccessDenied, UnauthorizedOperation) is
#: not here: the identity is valid, its policy is another matter.
REJECTED_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "AuthFailure",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def is_credentials_failure(e: BaseException) -> bool:
    """Did ``e`` happen because the credentials are missing or rejected?"""
    if {c.__name__ for c in type(e).__mro__} & CHAIN_FAILURES:
        return True
    resp = getattr(e, "response", None)
    code = (resp.get("Error") or {}).get("Code") if isinstance(resp, dict) else None
    return code in REJECTED_CODES


def credentials_error(needed_for: str, e: BaseException | None = None) -> CredentialsError:
    """The one line: no credentials (``e`` None), or the chain's failure or AWS's refusal."""
    if e is None:
        return CredentialsError(f"no AWS credentials found ({needed_for}): {HOW}")
    resp = getattr(e, "response", None)
    err = (resp.get("Error") or {}) if isinstance(resp, dict) else {}
    why = f"{err.get('Code')}: {err.get('Message', '')}" if err.get("Code") else str(e)
    why = " ".join(why.split())[:200]
    return CredentialsError(f"AWS credentials not usable ({needed_for}): {why}; {HOW}")


def require_credentials(needed_for: str, session: Any = None, region: str | None = None) -> Any:
    """A boto3 Session whose credential chain finds credentials (``session`` or a new one for
    ``region``), else ``CredentialsError``. Reads the chain only: environment, the shared
    files, SSO cache, container and instance metadata providers; no AWS API call."""
    import boto3

    try:
        session = session or boto3.session.Session(region_name=region)
        found = session.get_credentials()
    except Exception as e:  # botocore's chain errors; anything else is not ours to name
        if is_credentials_failure(e):
            raise credentials_error(needed_for, e) from None
        raise
    if found is None:
        raise credentials_error(needed_for)
    return session
