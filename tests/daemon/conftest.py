"""Fixtures for the daemon tests: moto server, EC2 fault proxy, kmock, node agent, daemons.

Everything listens on 127.0.0.1; intervals are shrunk through DaemonConfig so a scenario that
takes minutes in production takes about a second here. Waits are on conditions, with timeouts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon_harness import (
    Aws,
    Ec2FaultProxy,
    ImdsServer,
    KmockThread,
    NodeAgent,
    aws_stand,
    build_test_daemon,
    moto_server,
    new_boto_session,
)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the whole run; tests reset it."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def boto_session(moto_url: str) -> Any:
    """One boto3 Session (service models load once) with fake credentials."""
    return new_boto_session()


@pytest.fixture
def aws(moto_url: str, boto_session: Any) -> Aws:
    return aws_stand(moto_url, boto_session)


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
    """Daemons over the stand (FAST intervals, ``overrides`` on top); EC2 through the proxy."""
    made: list[Any] = []

    def make(start: bool = True, **overrides: Any) -> Any:
        d = build_test_daemon(aws, k8s.url, moto_url, boto_session, ec2_proxy.url, **overrides)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        if d.halt.is_set():
            continue
        d.stop(timeout=5)
