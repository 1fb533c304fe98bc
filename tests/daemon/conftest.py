"""Fixtures for the daemon tests: moto server, EC2 fault proxy, kmock, node agent, daemons.

Everything listens on 127.0.0.1; intervals are shrunk through DaemonConfig so a scenario that
takes minutes in production takes about a second here. Waits are on conditions, with timeouts.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon_harness import REGION, Aws, Ec2FaultProxy, ImdsServer, KmockThread, NodeAgent

from provisioner.daemon.config import DaemonConfig

# Production defaults shrunk ~100x; each test overrides what it is about.
FAST: dict[str, Any] = dict(
    step_interval_seconds=0.05,
    dispatch_interval_seconds=0.05,
    ack_flush_seconds=0.05,
    poll_interval_seconds=0.05,
    sqs_wait_seconds=0,
    housekeeping_interval_seconds=0.5,
    jitter_seconds=0.01,
    shutdown_timeout_seconds=1.0,
    drain_margin_seconds=0.5,
    api_backoff_seconds=0.02,
    replacement_timeout_seconds=20.0,
    launch_max_attempts=1,
    stop_timeout_seconds=10.0,
    workers=4,
    metrics_port=None,
    metrics_host="127.0.0.1",
    namespace_events="default",
)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the whole run; tests reset it. No environment variable is changed:
    clients get explicit endpoints and credentials, so other test packages are unaffected."""
    import moto.backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto's server lists its own package directory on every request to route it (a stat of
    # ~150 folders): the listing never changes, so remember it. Behaviour is unchanged.
    modules = tuple(moto.backends.list_of_moto_modules())
    mp = pytest.MonkeyPatch()
    mp.setattr(moto.backends, "list_of_moto_modules", lambda: modules)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    mp.undo()


@pytest.fixture(scope="session")
def boto_session(moto_url: str) -> Any:
    """One boto3 Session (service models load once) with fake credentials."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture
def aws(moto_url: str, boto_session: Any) -> Aws:
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()

    def c(name: str) -> Any:
        return boto_session.client(name, endpoint_url=moto_url)

    return Aws(c("ec2"), c("sqs"), c("events"), c("autoscaling")).setup()


@pytest.fixture(scope="session")
def _proxy(moto_url: str) -> Iterator[Ec2FaultProxy]:
    proxy = Ec2FaultProxy(moto_url)
    yield proxy
    proxy.stop()


@pytest.fixture
def ec2_proxy(_proxy: Ec2FaultProxy) -> Iterator[Ec2FaultProxy]:
    """The daemon's EC2 calls go through this proxy; SQS and autoscaling go to moto."""
    _proxy.rules.clear()
    _proxy.calls.clear()
    yield _proxy
    _proxy.rules.clear()


@pytest.fixture
def k8s() -> Iterator[KmockThread]:
    km = KmockThread()
    yield km
    km.stop()


@pytest.fixture
def core(k8s: KmockThread) -> Any:
    from kubernetes import client

    return client.CoreV1Api(client.ApiClient(client.Configuration(host=k8s.url)))


@pytest.fixture
def agent(aws: Aws, core: Any, k8s: KmockThread) -> Iterator[NodeAgent]:
    a = NodeAgent(aws.ec2, core, k8s).start()
    yield a
    a.stop()
    assert not a.errors, a.errors[:3]


@pytest.fixture
def imds_server() -> Iterator[Callable[[str], ImdsServer]]:
    servers: list[ImdsServer] = []

    def make(instance_id: str) -> ImdsServer:
        servers.append(ImdsServer(instance_id))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def make_daemon(
    aws: Aws, k8s: KmockThread, ec2_proxy: Ec2FaultProxy, boto_session: Any, moto_url: str
) -> Iterator[Callable[..., Any]]:
    from provisioner.daemon.service import build_daemon

    made: list[Any] = []

    def make(start: bool = True, **overrides: Any) -> Any:
        values = {**FAST, "mode": "queue", "queue_url": aws.queue_url, **overrides}
        cfg = DaemonConfig(**values).validate()
        endpoints = {"ec2": ec2_proxy.url, "sqs": moto_url, "autoscaling": moto_url}
        d = build_daemon(cfg, api_url=k8s.url, session=boto_session, endpoints=endpoints)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        if d.halt.is_set():
            continue
        d.stop(timeout=5)
