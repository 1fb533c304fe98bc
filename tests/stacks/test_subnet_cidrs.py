"""A subnet's CIDR must not depend on zone prices (review of session 8's diff).

The stack names each subnet by its zone and gives it the /20 at its place in the VPC's zone list.
Ordering that list by price (the daemon's fallback order) would move CIDRs between existing
subnets whenever a price refresh changed the cheapest zone, and `pulumi up` would replace them
(a new subnet colliding with its neighbour's range). The plan's zone comes first, the others by
name; only the fleet.ZONES tag carries the price order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stack_harness import quote, run_stack

from provisioner import fleet
from stacks.options import DeployOptions

# L40S x 1 spot in us-east-2: the snapshot prices g6e.xlarge at use2-az3 (the plan's zone),
# then use2-az2 $0.8402/h, then use2-az1 $0.9089/h (pricing/data snapshot), so the price order
# of the other zones (az2, az1) is the reverse of their names' order (az1, az2)
pytestmark = pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning")

SMALL = ["quote", "-m", "llama-3.1-8b", "--ctx", "32k", "--gpu", "L40S", "--market", "spot"]
SMALL += ["--cloud", "aws", "--region", "us-east-2", "--weights", "hub", "--json"]


def test_subnet_cidrs_follow_zone_names_and_the_tag_follows_prices(tmp_path: Path) -> None:
    run = run_stack(quote(tmp_path, "small_aws", SMALL), DeployOptions())
    cidrs = {
        s.inputs["availabilityZoneId"]: s.inputs["cidrBlock"]
        for s in run.of("aws:ec2/subnet:Subnet")
    }
    # position 0: the plan's zone; then the others sorted by name: /20 blocks 0, 16, 32
    assert cidrs == {
        "use2-az3": "10.42.0.0/20",
        "use2-az1": "10.42.16.0/20",
        "use2-az2": "10.42.32.0/20",
    }
    (template,) = run.of("aws:ec2/launchTemplate:LaunchTemplate")
    tags = template.inputs["tagSpecifications"][0]["tags"]
    assert fleet.split_tag_list(tags[fleet.ZONES]) == ("use2-az3", "use2-az2", "use2-az1")
