"""The boto3 side of the leftover cleanup (stacks/leftovers.py): find, detach, terminate, wait.

Credentials, and endpoints (AWS_ENDPOINT_URL), come from the user's usual AWS configuration;
the region is the stack's. Every AWS failure becomes one OperationalError line that says what
was already done, so nothing is left half-done silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from provisioner import fleet
from provisioner.aws_credentials import credentials_error, is_credentials_failure
from provisioner.errors import OperationalError
from stacks import leftovers as lo

Progress = Callable[[str], Any]


def _why(e: Exception) -> str:
    response = getattr(e, "response", None)
    err = response.get("Error", {}) if isinstance(response, dict) else {}
    if err.get("Code"):
        return f"{err['Code']}: {err.get('Message', '')}".strip().rstrip(":")
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class Ec2Cleanup:
    """Find and terminate one stack's instances in one region."""

    def __init__(self, region: str, session: Any = None) -> None:
        import boto3

        self.region = region
        try:  # a bad AWS_PROFILE or config file fails here
            session = session or boto3.session.Session(region_name=region)
            self.ec2 = session.client("ec2", region_name=region)
            self.autoscaling = session.client("autoscaling", region_name=region)
        except Exception as e:
            raise OperationalError(f"cannot set up AWS clients for {region}: {_why(e)}") from None

    def _describe(self, **kw: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.ec2.get_paginator("describe_instances").paginate(**kw):
            out.extend(page.get("Reservations") or [])
        return out

    def find(self, stack: str) -> list[lo.Leftover]:
        """Every instance tagged ``prov.dev/stack=stack`` not yet terminated, with its ASG."""
        try:
            found = lo.select(
                self._describe(
                    Filters=[
                        {"Name": f"tag:{fleet.STACK}", "Values": [stack]},
                        {"Name": "instance-state-name", "Values": list(lo.LIVE_STATES)},
                    ]
                ),
                stack,
            )
            groups: dict[str, str] = {}
            ids = [x.id for x in found]
            for start in range(0, len(ids), 50):  # the API's limit per call
                resp = self.autoscaling.describe_auto_scaling_instances(
                    InstanceIds=ids[start : start + 50]
                )
                for a in resp.get("AutoScalingInstances") or []:
                    groups[a["InstanceId"]] = a["AutoScalingGroupName"]
        except Exception as e:
            if is_credentials_failure(e):  # keys AWS does not accept: configuration, exit 2
                why = f"prov destroy lists stack {stack}'s instances"
                raise credentials_error(why, e) from None
            raise OperationalError(
                f"cannot list stack {stack}'s instances in {self.region}: {_why(e)}"
            ) from None
        return lo.with_groups(found, groups)

    def terminate(
        self,
        leftovers: list[lo.Leftover],
        progress: Progress,
        *,
        timeout_s: float = 600.0,
        poll_s: float = 5.0,
    ) -> int:
        """Detach from their ASGs (desired size decremented), terminate, wait until every one is
        shutting-down or terminated (at most ``timeout_s``). Returns how many were terminated."""
        ids = [x.id for x in leftovers]
        if not ids:
            return 0
        detached: list[str] = []
        try:
            for group, members in lo.by_group(leftovers).items():
                progress(f"Detaching {len(members)} instance(s) from ASG {group} ...")
                self.autoscaling.detach_instances(
                    InstanceIds=members,
                    AutoScalingGroupName=group,
                    ShouldDecrementDesiredCapacity=True,
                )
                detached += members
        except Exception as e:
            done = f"detached {', '.join(detached)}" if detached else "nothing detached"
            raise OperationalError(
                f"cannot detach from {group}: {_why(e)}; {done}, nothing terminated"
            ) from None
        progress(f"Terminating {len(ids)} instance(s) ...")
        try:
            for start in range(0, len(ids), 1000):
                self.ec2.terminate_instances(InstanceIds=ids[start : start + 1000])
        except Exception as e:
            raise OperationalError(
                f"cannot terminate instances: {_why(e)}; terminated so far: "
                f"{', '.join(ids[:start]) or 'none'}"
            ) from None
        self._wait(ids, progress, timeout_s, poll_s)
        return len(ids)

    def _wait(self, ids: list[str], progress: Progress, timeout_s: float, poll_s: float) -> None:
        start = time.monotonic()
        while True:
            try:
                waiting = lo.not_gone(self._describe(InstanceIds=ids), ids)
            except Exception as e:
                raise OperationalError(
                    f"terminated {', '.join(ids)} but cannot check their state: {_why(e)}"
                ) from None
            if not waiting:
                return
            elapsed = time.monotonic() - start
            if elapsed >= timeout_s:
                raise OperationalError(
                    f"terminated {len(ids)} instance(s) but {', '.join(waiting)} not shutting "
                    f"down after {timeout_s:.0f} s; the stack was not destroyed, rerun later"
                )
            progress(f"  waiting for {len(waiting)} instance(s) to shut down ({elapsed:.0f} s)")
            time.sleep(poll_s)
