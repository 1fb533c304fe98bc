"""Fuzz: the daemon's URLs. A bad URL is refused (exit 2); `--dry-run --once` against one that
does not answer fails (exit 1) naming it and why, instead of reporting 0 events handled."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fuzz_harness import failed, refused, run

BASE = ("daemon", "--dry-run", "--once", "--metrics-port", "-1", "--region", "us-east-1")


@pytest.fixture
def closed_url() -> Iterator[str]:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield f"http://127.0.0.1:{port}"


@pytest.fixture
def aws_env(closed_url: str) -> dict[str, str]:
    # hermetic: every AWS call goes to a closed local port, never to amazonaws.com
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": closed_url,
        "AWS_MAX_ATTEMPTS": "1",
    }


BAD: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "metadata-not-a-url",
        ("--mode", "imds", "--node-name", "n", "--metadata-url", "nope"),
        ("--metadata-url",),
    ),
    (
        "metadata-ftp",
        ("--mode", "imds", "--node-name", "n", "--metadata-url", "ftp://x"),
        ("--metadata-url",),
    ),
    ("queue-not-a-url", ("--queue-url", "my queue"), ("--queue-url",)),
    ("queue-no-host", ("--queue-url", "http://"), ("--queue-url",)),
    (
        "kube-api-not-a-url",
        ("--queue-url", "http://127.0.0.1:9/1/q", "--kube-api", "cluster"),
        ("--kube-api",),
    ),
    (
        "kube-api-no-host",
        ("--queue-url", "http://127.0.0.1:9/1/q", "--kube-api", "https://"),
        ("--kube-api",),
    ),
    (
        "kube-api-space",
        ("--queue-url", "http://127.0.0.1:9/1/q", "--kube-api", "http://a b"),
        ("--kube-api",),
    ),
]


@pytest.mark.parametrize(("args", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_urls_are_refused(
    aws_env: dict[str, str], args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    refused(run(*BASE, *args, env=aws_env), *words)


def test_unreachable_metadata_fails_with_its_cause(
    aws_env: dict[str, str], closed_url: str
) -> None:
    args = ("--mode", "imds", "--node-name", "n", "--metadata-url", closed_url)
    failed(
        run(*BASE, *args, "--kube-api", closed_url, env=aws_env), "--metadata-url", "unreachable"
    )


def test_unreachable_queue_fails_with_its_cause(aws_env: dict[str, str], closed_url: str) -> None:
    args = ("--queue-url", f"{closed_url}/123456789012/prov", "--kube-api", closed_url)
    failed(run(*BASE, *args, env=aws_env), "--queue-url", "cannot read the queue")


def test_unreachable_kubernetes_fails_with_its_cause(closed_url: str) -> None:
    """IMDS answers (a stand-in on 127.0.0.1), the Kubernetes API does not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Imds(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # IMDSv2 token
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"token")

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        imds = f"http://127.0.0.1:{server.server_address[1]}"
        env = {
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
            "AWS_ENDPOINT_URL": closed_url,
        }
        args = (
            "--mode",
            "imds",
            "--node-name",
            "n",
            "--metadata-url",
            imds,
            "--kube-api",
            closed_url,
        )
        failed(run(*BASE, *args, env=env), "Kubernetes API")
    finally:
        server.shutdown()
