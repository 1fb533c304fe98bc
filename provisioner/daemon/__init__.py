"""prov's spot interruption daemon: monitor -> store -> handler.

A monitor (SQS queue of EventBridge events, or the instance metadata service) turns each notice
into an :class:`~provisioner.daemon.events.InterruptionEvent`; the store dedupes it and computes
its deadline; the handler requests replacement capacity first, then taints, cordons and drains
the replica through the Eviction API, waits for the replacement to be Ready and only then
acknowledges the notice. See docs/daemon.md.

Only the pure modules (``tags``, ``events``, ``config``, ``store``, ``manifests``) import without
the daemon extra; the adapters import boto3, kubernetes, apscheduler and prometheus_client.
"""
