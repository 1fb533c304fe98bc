"""Warm spares (--spare-replicas N) against moto, kmock, the node agent and vLLM stand-ins.

A spare is a whole replica group tagged prov.dev/spare=true, loaded but out of traffic; an
interruption promotes it (it joins the load balancers before the doomed replica is cordoned)
instead of waiting for a cold launch, and the reconcile job launches a new one. Expected values
are derived by hand from the fallback order: the template zone first, a just-reclaimed spot pool
blocked, spot before on-demand.
"""

from __future__ import annotations

import time

from daemon_harness import LoadClient, NodeAgent, VllmStandIn, node_json, wait_until
from test_daemon_scenarios import handled, one_replica, state_of

from provisioner import fleet
from provisioner.daemon.scheduler import daemon_jobs

LOAD_S = 2.0  # the stand-in model load: a cold replacement cannot serve sooner than this


def tag_map(inst: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def spares(aws) -> list[dict]:
    return aws.live(**{fleet.SPARE: fleet.SPARE_VALUE})


def out_of_traffic(core, inst: dict) -> bool:
    node = node_json(core, inst["PrivateDnsName"]) or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    return labels.get(fleet.SPARE_LABEL) == "true" and labels.get(fleet.EXCLUDE_LB_LABEL) == "true"


def launches(aws, ec2_proxy) -> list[tuple[str, str, str, str | None]]:
    by_subnet = {v: k for k, v in aws.subnets.items()}
    return [
        (
            p["InstanceType"],
            by_subnet.get(p.get("SubnetId", ""), "?"),
            p.get("InstanceMarketOptions.MarketType", "on-demand"),
            code,
        )
        for p, code in ec2_proxy.launches()
    ]


def test_interruption_promotes_a_warm_spare_without_waiting_for_a_launch(
    aws, core, k8s, make_daemon, ec2_proxy
):
    servers: dict[str, VllmStandIn] = {}

    def on_pod(spec):
        servers[spec.name] = VllmStandIn(prestop=0.05)
        return servers[spec.name].url

    def terminate(spec, grace):
        if spec.name in servers:
            servers[spec.name].shutdown(grace)

    agent = NodeAgent(aws.ec2, core, k8s, on_pod=on_pod, terminate=terminate, load_delay=LOAD_S)
    agent.start()
    lb = LoadClient(core)
    try:
        (old,) = aws.launch_replica("r1", zone="us-east-1a")
        agent.settle()  # r1 serves from the start
        d = make_daemon(spare_replicas=1)

        # One spare, shaped like r1 and in its zone (first in the fallback order), on spot;
        # once loaded its pod is Ready, yet no request can reach it.
        [spare] = wait_until(lambda: spares(aws), what="a spare launched")
        t = tag_map(spare)
        assert (spare["InstanceType"], spare["Placement"]["AvailabilityZone"]) == (
            "p5.48xlarge",
            "us-east-1a",
        )
        assert spare.get("InstanceLifecycle") == "spot" and t[fleet.POOL] == "pool-a"
        assert t[fleet.REPLICA_SIZE] == "1" and fleet.REPLACES not in t
        spare_pod = f"vllm-{t[fleet.REPLICA]}-0"
        wait_until(lambda: spare_pod in agent.ready_at, timeout=10, what="spare loaded")
        wait_until(lambda: out_of_traffic(core, spare), what="spare labelled out of traffic")
        assert not node_json(core, spare["PrivateDnsName"])["spec"].get("unschedulable")
        assert lb._view() == [servers["vllm-r1-0"].url]  # r1 only
        assert len(spares(aws)) == 1  # N = 1: the job does not launch a second one

        t0 = time.monotonic()
        aws.spot_warning(old["InstanceId"], seconds_left=4)
        spare_url = servers[spare_pod].url
        wait_until(lambda: spare_url in lb._view(), timeout=10, what="spare in traffic")
        to_serving = time.monotonic() - t0
        assert lb.send(spare_url, tokens=5, delay=0.01) == ("ok", "")
        [(_, out)] = handled(d)
        first_evict = k8s.eviction_at[0] - t0
        wait_until(lambda: old["PrivateDnsName"] in agent.gone, what="old node removed")
    finally:
        agent.stop()
        for s in servers.values():
            if s.accepting:
                s.httpd.shutdown()

    # A cold replacement would serve LOAD_S after its launch at the earliest; the spare served
    # sooner, and the doomed replica was drained as soon as the (Ready) spare took traffic.
    print(
        f"\nspare: notice -> promoted spare in traffic {to_serving:.2f}s, -> first eviction "
        f"{first_evict:.2f}s (model load {LOAD_S}s)"
    )
    assert to_serving < LOAD_S and first_evict < LOAD_S
    assert out.action == "replaced-and-drained"
    assert [e[0] for e in k8s.eviction_log if e[1] == "201"] == ["vllm-r1-0"]
    # The spare *is* the replacement: re-tagged, no instance launched for r1.
    [promoted] = aws.replacements_of("r1")
    assert promoted["InstanceId"] == spare["InstanceId"]
    assert tag_map(promoted)[fleet.SPARE] == fleet.SPARE_PROMOTED
    assert state_of(agent.gone[old["PrivateDnsName"]])["replacement"] == t[fleet.REPLICA]
    assert not out_of_traffic(core, spare)

    # Replenished in the background: a new spare, away from the reclaimed spot pool
    # (p5.48xlarge, us-east-1a, spot is blocked), kept out of traffic.
    [fresh] = wait_until(lambda: spares(aws), what="a new spare")
    assert fresh["InstanceId"] != spare["InstanceId"]
    assert fresh["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert fresh.get("InstanceLifecycle") == "spot"
    assert [x[1:3] for x in launches(aws, ec2_proxy)] == [
        ("us-east-1a", "spot"),
        ("us-east-1b", "spot"),
    ]
    assert d.m.spare_promotions.labels("spot")._value.get() == 1
    assert d.m.replacements.labels("spot")._value.get() == 0  # nothing launched cold


def test_on_demand_floor_is_not_met_by_promoting_a_spot_spare(
    aws, agent, core, ec2_proxy, make_daemon
):
    aws.launch_replica("r0", market="on-demand")
    (inst,) = one_replica(aws, agent, "r1")
    d = make_daemon(spare_replicas=1, on_demand_floor=2)  # r0 is 1 on-demand replica of 2
    [spare] = wait_until(lambda: spares(aws), what="a spare launched")
    assert spare.get("InstanceLifecycle") == "spot"
    wait_until(lambda: out_of_traffic(core, spare), what="spare labelled out of traffic")
    aws.spot_warning(inst["InstanceId"], seconds_left=6)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    # The floor needs an on-demand replacement: the spot spare does not qualify, so an
    # on-demand group was launched cold, and the spare is still a spare, out of traffic.
    [new] = aws.replacements_of("r1")
    assert new["InstanceId"] != spare["InstanceId"] and "InstanceLifecycle" not in new
    assert [x[2] for x in launches(aws, ec2_proxy)] == ["spot", "on-demand"]
    assert [i["InstanceId"] for i in spares(aws)] == [spare["InstanceId"]]
    assert out_of_traffic(core, spare)
    assert d.m.spare_promotions.labels("spot")._value.get() == 0


def test_spares_fall_back_to_on_demand_and_count_for_no_floor(
    aws, agent, core, ec2_proxy, make_daemon
):
    (inst,) = one_replica(aws, agent, "r1")
    ec2_proxy.rules.append(
        lambda p: (
            (500, "InsufficientInstanceCapacity")
            if p.get("Action") == "RunInstances"
            and p.get("InstanceMarketOptions.MarketType") == "spot"
            else None
        )
    )
    d = make_daemon(spare_replicas=1, on_demand_floor=1)
    [spare] = wait_until(lambda: spares(aws), what="a spare launched")
    ice = "InsufficientInstanceCapacity"
    # The replacements' fallback: spot in the template's zone, then the others; then on-demand.
    assert launches(aws, ec2_proxy) == [
        ("p5.48xlarge", "us-east-1a", "spot", ice),
        ("p5.48xlarge", "us-east-1b", "spot", ice),
        ("p5.48xlarge", "us-east-1c", "spot", ice),
        ("p5.48xlarge", "us-east-1a", "on-demand", None),
    ]
    assert "InstanceLifecycle" not in spare
    assert tag_map(spare)[fleet.MARKET] == "on-demand"
    # A spare serves nobody: it is not one of the pool's on-demand replicas for the floor...
    assert d.capacity.on_demand_replicas("pool-a", exclude_replica="r1") == 0
    wait_until(lambda: out_of_traffic(core, spare), what="spare labelled out of traffic")
    aws.spot_warning(inst["InstanceId"], seconds_left=6)
    [(_, out)] = handled(d)
    # ...and, being on-demand, it is what the floor (0 < 1) asks for: promoted.
    assert out.action == "replaced-and-drained"
    assert [i["InstanceId"] for i in aws.replacements_of("r1")] == [spare["InstanceId"]]
    assert d.m.spare_promotions.labels("on-demand")._value.get() == 1
    # Every spot pool is now blocked (three out of capacity, us-east-1a also reclaimed): the new
    # spare goes straight to on-demand in the template's zone.
    [fresh] = wait_until(lambda: spares(aws), what="a new spare")
    assert fresh["InstanceId"] != spare["InstanceId"] and "InstanceLifecycle" not in fresh
    assert launches(aws, ec2_proxy)[4:] == [("p5.48xlarge", "us-east-1a", "on-demand", None)]


def test_notice_for_a_spare_retires_it_and_a_new_one_is_launched(
    aws, agent, core, k8s, make_daemon
):
    one_replica(aws, agent, "r1")
    d = make_daemon(spare_replicas=1)
    [spare] = wait_until(lambda: spares(aws), what="a spare launched")
    wait_until(lambda: out_of_traffic(core, spare), what="spare labelled out of traffic")
    aws.spot_warning(spare["InstanceId"], seconds_left=6)
    [(_, out)] = handled(d)
    assert out.action == "spare-retired"
    state = aws.ec2.describe_instances(InstanceIds=[spare["InstanceId"]])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    assert k8s.eviction_log == []  # nothing served there: nothing drained
    assert aws.replacements_of(tag_map(spare)[fleet.REPLICA]) == []  # not replaced as serving
    [fresh] = wait_until(lambda: spares(aws), what="a new spare")
    assert fresh["Placement"]["AvailabilityZone"] == "us-east-1b"  # 1a/spot just reclaimed


def test_dry_run_names_the_spare_it_would_promote(aws, agent, make_daemon):
    (inst,) = one_replica(aws, agent, "r1")
    spare = aws.launch_replica("s-manual", zone="us-east-1b")[0]  # a spare from an earlier run
    aws.ec2.create_tags(
        Resources=[spare["InstanceId"]], Tags=[{"Key": fleet.SPARE, "Value": fleet.SPARE_VALUE}]
    )
    agent.settle()
    d = make_daemon(dry_run=True, spare_replicas=1)
    aws.spot_warning(inst["InstanceId"], seconds_left=30)
    [(_, out)] = handled(d)
    assert out.detail["decisions"][0] == (
        "promote spare s-manual (1 x p5.48xlarge@us-east-1b/spot) as the replacement of r1"
    )
    assert aws.replacements_of("r1") == [] and len(spares(aws)) == 1


def test_zero_spares_is_the_old_daemon(aws, make_daemon):
    d0 = make_daemon(start=False)
    d2 = make_daemon(start=False, spare_replicas=2)
    assert d0.spares is None and d0.handler.spares is None
    assert "spare-reconcile" not in [j.name for j in daemon_jobs(d0)]
    [job] = [j for j in daemon_jobs(d2) if j.name == "spare-reconcile"]
    assert job.seconds == 0.1 and d2.handler.spares is d2.spares


def test_spares_beyond_n_are_retired_the_loading_one_first(aws, agent, core, make_daemon):
    one_replica(aws, agent, "r1")
    tag = [{"Key": fleet.SPARE, "Value": fleet.SPARE_VALUE}]
    (ready,) = aws.launch_replica("s-a")
    agent.settle()  # s-a: loaded
    agent.load_delay = 60  # s-b: still loading when the daemon looks
    (loading,) = aws.launch_replica("s-b")
    aws.ec2.create_tags(Resources=[ready["InstanceId"], loading["InstanceId"]], Tags=tag)
    wait_until(lambda: "vllm-s-b-0" in agent.pods, what="s-b's pod placed")
    d = make_daemon(spare_replicas=1)  # one too many: the one not Ready goes, not "s-a"
    wait_until(lambda: len(spares(aws)) == 1, what="an extra spare retired")
    assert [i["InstanceId"] for i in spares(aws)] == [ready["InstanceId"]]
    assert d.m.actions.labels("spare-retire", "ok")._value.get() == 1
    assert d.m.spare_launches.labels("spot")._value.get() == 0
    wait_until(lambda: out_of_traffic(core, ready), what="the kept spare out of traffic")
