"""WeightsBucket: the in-region bucket the aws-eks stack creates for the model (--weights s3
without --weights-bucket).

* **Name**: ``prov-<account>-<region>-<8 hex of the stack>`` (stacks/weights_path.py
  ``created_bucket_name``): the same stack always gets the same bucket, so a redeploy reuses
  the weights (and the compile cache) it holds. Exported as the stack output ``weightsBucket``.
* **Private**: all four S3 Block Public Access settings on, ACLs disabled (``BucketOwner-
  Enforced``), a bucket policy refusing requests without TLS (``aws:SecureTransport``); AWS's
  S3 security best practices (docs.aws.amazon.com/AmazonS3/latest/userguide/security-best-
  practices.html).
* **Encrypted**: SSE-S3 (AES-256), stated explicitly; S3 applies it to every new object by
  default since 2023-01-05, so no KMS key, key policy or per-request KMS cost is added.
* **Lifecycle**: incomplete multipart uploads are aborted after ``ABORT_MULTIPART_DAYS`` (an
  interrupted fill leaves parts that are billed until then); the compile cache under
  ``cache/`` expires after ``CACHE_EXPIRE_DAYS`` (entries of old images and flags pile up; the
  running pods' sidecar writes current ones back).
* **Retain (default)**: the bucket and its ~600 GB outlive ``prov destroy`` (Pulumi's
  ``retainOnDelete``): refilling costs a Hub download of ~15 minutes and the Hub's goodwill. The
  next deploy of the stack finds it under the same name and adopts it (Pulumi's ``import``
  option; when the stack already manages it, the option changes nothing: pulumi/pulumi
  developer-docs/architecture/import.md). ``--delete-weights-bucket``: deleted with the stack,
  objects included (``forceDestroy``).
"""

from __future__ import annotations

import json
import warnings

import pulumi
import pulumi_aws as aws

from provisioner import fleet

with warnings.catch_warnings():
    # pulumi-aws 7 warns on importing its s3 module about its own deprecated *V2 classes, which
    # prov does not use (it uses aws.s3.Bucket and the unversioned settings resources)
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_aws.s3

ABORT_MULTIPART_DAYS = 7
CACHE_EXPIRE_DAYS = 30


def tls_only_policy(bucket: str) -> dict[str, object]:
    """Deny every request to the bucket that does not use TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class WeightsBucket(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        bucket: str,
        *,
        keep: bool,
        exists: bool,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("prov:aws:WeightsBucket", name, None, opts)
        # the settings stay with a retained bucket (re-created on a redeploy: each is a PUT)
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=keep)
        own = pulumi.ResourceOptions(
            parent=self, retain_on_delete=keep, import_=bucket if exists else None
        )
        self.bucket = aws.s3.Bucket(
            f"{name}-weights", bucket=bucket, force_destroy=not keep, tags=tags, opts=own
        )
        b = self.bucket.id
        after = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[self.bucket])
        )
        self.public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-weights",
            bucket=b,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=after,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-weights",
            bucket=b,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=after,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-weights",
            bucket=b,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=after,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-weights",
            bucket=b,
            rules=[
                {
                    "id": "abort-incomplete-uploads",
                    "status": "Enabled",
                    "filter": {},
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": ABORT_MULTIPART_DAYS
                    },
                },
                {
                    "id": "expire-compile-cache",
                    "status": "Enabled",
                    "filter": {"prefix": f"{fleet.COMPILE_CACHE_PREFIX}/"},
                    "expiration": {"days": CACHE_EXPIRE_DAYS},
                },
            ],
            opts=after,
        )
        # after the public-access block: a policy is written once the bucket is private
        aws.s3.BucketPolicy(
            f"{name}-weights",
            bucket=b,
            policy=json.dumps(tls_only_policy(bucket)),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.public_access])
            ),
        )
        self.register_outputs({"bucket": bucket})
