"""FakeMetadata: an instance's metadata in memory, behind ``monitors.imds.Metadata``.

Like IMDSv2 (and ``monitors.imds.ImdsClient`` over HTTP): ``get`` answers the text at a path or
None when the path is absent (404); with ``reachable`` False every call raises ImdsError, as an
unreachable or token-refusing service does. ``set`` puts a path (a dict is sent as JSON, as the
service does for spot/instance-action), None removes it.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from provisioner.daemon.monitors.imds import ImdsError, Metadata


class FakeMetadata:
    def __init__(self, instance_id: str) -> None:
        self.paths: dict[str, str] = {"instance-id": instance_id}
        self.reachable = True
        self.gets: list[str] = []
        self._token: str | None = None

    def set(self, path: str, body: Any) -> None:
        if body is None:
            self.paths.pop(path, None)
        else:
            self.paths[path] = body if isinstance(body, str) else json.dumps(body)

    def token(self, refresh: bool = False) -> str:
        if not self.reachable:
            raise ImdsError("metadata service unreachable: connection refused")
        if refresh or self._token is None:
            self._token = uuid.uuid4().hex
        return self._token

    def get(self, path: str) -> str | None:
        self.token()
        self.gets.append(path)
        return self.paths.get(path)


if TYPE_CHECKING:  # mypy holds the fake to the Protocol the monitor uses
    _is_metadata: Metadata = FakeMetadata("i-0")
