"""Leader election on a coordination.k8s.io/v1 Lease, for queue mode with several replicas.

Only the leader polls the queue. A lease not renewed for ``lease_seconds`` can be taken over.
Writes carry the resourceVersion read, so two candidates racing for an expired lease cannot
both win on a real API server (the loser gets 409).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.kube import Kube
from provisioner.daemon.metrics import Metrics

log = logging.getLogger("prov.daemon.leader")


def _micro(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseElector:
    def __init__(
        self,
        kube: Kube,
        cfg: DaemonConfig,
        identity: str,
        metrics: Metrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.ns = cfg.lease_namespace
        self.name = cfg.lease_name
        self.seconds = cfg.lease_seconds
        self.identity = identity
        self.m = metrics
        self.now = now
        self.is_leader = False

    def _set(self, leader: bool) -> bool:
        if leader != self.is_leader:
            log.info(
                "leadership " + ("acquired" if leader else "lost"),
                extra={"identity": self.identity, "lease": f"{self.ns}/{self.name}"},
            )
        self.is_leader = leader
        self.m.leader.set(1 if leader else 0)
        return leader

    def tick(self) -> bool:
        try:
            return self._set(self._try())
        except Exception as e:
            log.warning("lease renewal failed", extra={"error": f"{type(e).__name__}: {e}"})
            self.m.errors.labels("lease").inc()
            return self._set(False)

    def _try(self) -> bool:
        now = self.now()
        lease = self.kube.get_lease(self.ns, self.name)
        spec_new = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.seconds)),
            "renewTime": _micro(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {**spec_new, "acquireTime": _micro(now), "leaseTransitions": 0},
            }
            return self.kube.create_lease(self.ns, body)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.seconds)
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder not in (None, self.identity) and not expired:
            return False
        if holder != self.identity:
            spec_new["acquireTime"] = _micro(now)
            spec_new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        meta: dict[str, Any] = {}
        rv = (lease.get("metadata") or {}).get("resourceVersion")
        if rv:
            meta["resourceVersion"] = rv
        return self.kube.patch_lease(self.ns, self.name, {"metadata": meta, "spec": spec_new})

    def release(self) -> None:
        if not self.is_leader:
            return
        try:
            self.kube.patch_lease(
                self.ns,
                self.name,
                {
                    "spec": {
                        "holderIdentity": None,
                        "renewTime": _micro(self.now() - timedelta(days=1)),
                    }
                },
            )
        except Exception as e:
            log.warning("could not release the lease", extra={"error": str(e)})
        self._set(False)
