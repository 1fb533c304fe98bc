"""pricing.offer_filter: the one --cloud/--region/--gpu/market filter of quote and prices show.

Rows are hand-made; which rows each flag keeps is read off the rows by hand.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from pricing.offer_filter import OfferFilter, some
from pricing.show import price_rows
from provisioner.cli.main import app
from provisioner.cli.quote_empty import filtered
from provisioner.core.offer import Offer
from provisioner.core.request import make_request
from provisioner.errors import NoFeasibleShapeError, UsageError


def _offer(cloud: str, region: str, zone: str, itype: str, gpu: str, od: float | None,
           spot: float | None) -> Offer:  # fmt: skip
    return Offer(cloud, region, zone, itype, gpu, 8, 80.0, 192.0, 2048.0, "nvlink", "efa", od,
                 spot, "2026-05-20", ())  # fmt: skip


OFFERS = [
    _offer("aws", "us-east-1", "use1-az1", "p5.48xlarge", "H100-SXM", 55.04, 21.0),
    _offer("aws", "us-east-1", "use1-az2", "p5en.48xlarge", "H200-SXM", 63.3, None),
    _offer("aws", "us-west-2", "usw2-az1", "p5.48xlarge", "H100-SXM", 55.04, 25.0),
    _offer("azure", "eastus2", "", "Standard_ND96isr_MI300X_v5", "MI300X", 48.0, 8.87),
    _offer("lambda", "any", "", "gpu_8x_h100_sxm5", "H100-SXM", None, None),
]


def _keys(offers: list[Offer]) -> list[tuple[str, str, str]]:
    return [(o.cloud, o.zone or o.region, o.instance_type) for o in offers]


def test_each_flag_keeps_the_rows_it_names() -> None:
    sel = OfferFilter(regions=("USE1-AZ2",)).select(OFFERS)  # a zone, any case
    assert _keys(sel.offers) == [("aws", "use1-az2", "p5en.48xlarge")]
    sel = OfferFilter(gpus=("h100",)).select(OFFERS)  # a prefix; lambda has no price at all
    assert _keys(sel.offers) == [
        ("aws", "use1-az1", "p5.48xlarge"),
        ("aws", "usw2-az1", "p5.48xlarge"),
    ]
    sel = OfferFilter(gpus=("amd",), market="spot").select(OFFERS)  # a vendor
    assert _keys(sel.offers) == [("azure", "eastus2", "Standard_ND96isr_MI300X_v5")]
    sel = OfferFilter(clouds=("AWS",), market="spot").select(OFFERS)  # p5en has no spot
    assert [o.zone for o in sel.offers] == ["use1-az1", "usw2-az1"]
    assert sel.emptied_by is None and sel.empty_error() is None


def test_the_first_filter_that_left_nothing_is_named() -> None:
    sel = OfferFilter(clouds=("aws",), regions=("mars-1",)).select(OFFERS)
    assert (sel.offers, sel.emptied_by, len(sel.before)) == ([], "--region", 3)
    err = sel.empty_error()
    assert isinstance(err, UsageError)
    assert str(err) == (
        "--region mars-1 matches no offer of --cloud aws; regions with offers: us-east-1, us-west-2"
    )
    sel = OfferFilter(regions=("us-west-2",), gpus=("H200",)).select(OFFERS)
    err = sel.empty_error()
    assert isinstance(err, NoFeasibleShapeError)
    assert str(err) == (
        "--gpu H200: no such offer with --region us-west-2; GPUs offered there: H100-SXM"
    )
    # an empty market is the planner's to explain (quote's empty_error), not the filter's
    sel = OfferFilter(regions=("us-east-1",), gpus=("H200",), market="spot").select(OFFERS)
    assert (sel.emptied_by, sel.empty_error()) == ("market", None)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^unknown --cloud 'gcp'; allowed: aws, azure, lambda$"):
        OfferFilter(clouds=("gcp",)).check_names(OFFERS)
    with pytest.raises(UsageError, match=r"^unknown --gpu 'V100'; allowed: amd, nvidia, H100-SXM"):
        OfferFilter(gpus=("V100",)).check_names(OFFERS)
    with pytest.raises(UsageError, match="--market"):
        OfferFilter(market="reserved").check_names(OFFERS)


@pytest.mark.parametrize(
    ("clouds", "regions", "gpus", "market"),
    [
        ((), (), (), "any"),
        (("aws",), ("us-east-1",), ("H100",), "any"),
        ((), ("eastus2", "use1-az1"), ("nvidia", "amd"), "spot"),
        (("lambda",), (), (), "any"),
    ],
)
def test_quote_and_prices_show_select_the_same_offers(
    clouds: tuple[str, ...], regions: tuple[str, ...], gpus: tuple[str, ...], market: str
) -> None:
    req = make_request(model="meta-llama/Llama-3.1-8B", ctx=8192, clouds=clouds,
                       regions=regions, gpus=gpus, market=market)  # fmt: skip
    quote = _keys(filtered(req, OFFERS))
    rows = price_rows(OFFERS, clouds=clouds, regions=regions, gpus=gpus,
                      spot_only=market == "spot")  # fmt: skip
    shown = [(r["cloud"], r["zone"] or r["region"], r["instance_type"]) for r in rows]
    assert sorted(quote) == sorted(shown)


def test_both_commands_refuse_an_empty_region_alike() -> None:
    # review7 #17: prices show printed "0 of 0 offers" and exited 0 where quote exits 2
    runner = CliRunner()
    quote = runner.invoke(
        app, ["quote", "--model", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--region", "mars-1"]
    )
    assert quote.exit_code == 2 and "--region mars-1 matches no offer" in quote.output
    for extra in ([], ["--json"]):
        shown = runner.invoke(app, ["prices", "show", "--region", "mars-1", *extra])
        assert shown.exit_code == 2 and shown.stdout == ""
        assert shown.stderr.splitlines() == quote.stderr.splitlines()


def test_regions_with_commas_are_listed_so_one_can_tell_them_apart() -> None:
    # review7 #17: Vast's "Michigan, US, NA" joined with ", " read ", CA, NA, , US, NA, ..."
    vast = [
        replace(OFFERS[0], cloud="vast", region=r, zone="")
        for r in ("Michigan, US, NA", ", US, NA", "France, FR, EU")
    ]
    err = OfferFilter(regions=("mars-1",)).select(vast).empty_error()
    assert str(err).endswith("regions with offers: , US, NA; France, FR, EU; Michigan, US, NA")
    assert some(["us-east-1", "us-west-2"]) == "us-east-1, us-west-2"


@pytest.mark.parametrize("command", [["prices", "show"], ["quote", "-m", "llama-3.1-8b"]])
def test_a_cloud_with_a_live_source_but_no_prices_says_how_to_get_them(command: list[str]) -> None:
    # review7 #18: README and `prices refresh` advertise OCI; quote said "unknown --cloud 'oci'"
    result = CliRunner().invoke(app, [*command, "--cloud", "oci"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "prov: error: --cloud oci: no oci prices among the offers yet; "
        "prov prices refresh --cloud oci fetches them"
    )
    other = CliRunner().invoke(app, [*command, "--cloud", "ibm"])
    assert other.exit_code == 2 and "unknown --cloud 'ibm'; allowed: aws, azure" in other.stderr


def test_regions_of_several_clouds_are_counted_per_cloud() -> None:
    # review8: without --cloud, AWS names and Vast's locations mixed into "', CA, NA; , US, NA;
    # ARIZONA_USA; ..."; OFFERS: aws us-east-1 and us-west-2, azure eastus2, lambda "any"
    vast = [replace(OFFERS[0], cloud="vast", region=r, zone="") for r in (", US, NA", "CA")]
    err = OfferFilter(regions=("mars-1",)).select([*OFFERS, *vast]).empty_error()
    assert str(err) == (
        "--region mars-1 matches no offer; regions with offers: aws 2, azure 1, lambda 1, "
        "vast 2 (add --cloud to list one cloud's)"
    )
    err = OfferFilter(clouds=("vast",), regions=("mars-1",)).select(vast).empty_error()
    assert str(err).endswith("regions with offers: , US, NA; CA")  # one cloud: its list
