"""JSON over HTTP for the live price sources: standard library only, retries with backoff.

Every source's endpoint can be overridden by ``PROV_<CLOUD>_PRICES_URL`` (tests point it at
a recorded response served on 127.0.0.1; a user can point it at a mirror or proxy).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from provisioner.errors import OperationalError

USER_AGENT = "prov-price-refresh (+https://github.com/; prices only, no credentials)"
#: Attempts per request (1 + retries) and the first backoff in seconds (doubles each retry).
ATTEMPTS = 4
BACKOFF_S = 0.5
TIMEOUT_S = 30.0
#: HTTP statuses worth retrying: throttling and server-side failures.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def endpoint(cloud: str, default: str) -> str:
    """``PROV_<CLOUD>_PRICES_URL`` if set, else the public default."""
    return os.environ.get(f"PROV_{cloud.upper()}_PRICES_URL") or default


class FetchError(OperationalError):
    """A live source could not be read (after retries) or answered something unusable."""


def fetch_json(
    url: str,
    *,
    body: dict[str, Any] | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    timeout_s: float = TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """GET (or POST ``body`` as JSON) ``url`` and parse the JSON answer.

    Retries connection errors and ``RETRY_STATUSES`` with exponential backoff (honouring a
    numeric Retry-After); any other status, or a body that is not JSON, is a FetchError.
    """
    data = json.dumps(body).encode() if body is not None else None
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    delay = backoff_s
    last = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code not in RETRY_STATUSES:
                raise FetchError(f"{_short(url)}: {last}") from None
            retry_after = exc.headers.get("Retry-After", "") if exc.headers else ""
            if retry_after.isdigit():
                delay = max(delay, min(float(retry_after), 60.0))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"cannot connect ({reason})"
        else:
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise FetchError(f"{_short(url)}: the answer is not JSON") from None
        if attempt < attempts:
            sleep(delay)
            delay *= 2
    raise FetchError(f"{_short(url)}: {last} after {attempts} attempts")


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
