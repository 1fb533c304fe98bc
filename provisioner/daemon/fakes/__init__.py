"""In-memory fakes of the daemon's adapters, for fast tests of its policy.

Each implements its adapter's Protocol and behaves like the real service for what it covers
(state, errors, idempotency): ``ec2.FakeCapacity`` (capacity.Capacity: EC2 + Auto Scaling),
``kube.FakeKube`` (kube.Kube: nodes, pods, evictions, events, leases), ``sqs.FakeSqs``
(monitors.sqs.SqsQueue) and ``imds.FakeMetadata`` (monitors.imds.Metadata).
tests/daemon/test_daemon_contract_*.py run the same assertions against each fake and its real
adapter (boto3 against a moto server, the kubernetes client against kmock, HTTP against an
IMDSv2 server), so a fake cannot drift from what it stands for. They import neither boto3 nor
the kubernetes client.
"""
