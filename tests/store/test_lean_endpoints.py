"""The store's botocore sessions keep only S3's and STS's rows of botocore's
endpoint table: S3 and STS resolve exactly as with the whole table, and the
process keeps megabytes less for the life of every command."""

from __future__ import annotations

import gc
import tracemalloc

import boto3
import botocore.session
import pytest
from botocore.config import Config

from s3archive.config import S3Settings
from s3archive.store.s3_store import ENDPOINT_SERVICES, lean_botocore_session, make_client

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1",
           "eu-isoe-west-1", "us-west-9"]  # the last: unlisted, the partition's defaults


@pytest.fixture(scope="module")
def resolvers() -> tuple[object, object]:
    """botocore's resolver over its whole table, and the lean session's."""
    return tuple(core._get_internal_component("endpoint_resolver")
                 for core in (botocore.session.Session(), lean_botocore_session()))


def test_the_lean_table_keeps_s3_and_sts_in_every_partition(resolvers) -> None:
    full, lean = resolvers
    assert [p["partition"] for p in lean._endpoint_data["partitions"]] \
        == [p["partition"] for p in full._endpoint_data["partitions"]]
    for partition in lean._endpoint_data["partitions"]:
        assert set(partition["services"]) <= ENDPOINT_SERVICES
    assert any("s3" in p["services"] for p in lean._endpoint_data["partitions"])


@pytest.mark.parametrize("service", sorted(ENDPOINT_SERVICES))
def test_s3_and_sts_resolve_as_with_botocores_whole_table(resolvers, service: str) -> None:
    full, lean = resolvers
    for region in REGIONS:
        for fips in (False, True):
            assert lean.construct_endpoint(service, region, use_fips_endpoint=fips) \
                == full.construct_endpoint(service, region, use_fips_endpoint=fips), region
        partition = lean.get_partition_for_region(region)
        assert partition == full.get_partition_for_region(region)
        assert lean.get_available_endpoints(service, partition) \
            == full.get_available_endpoints(service, partition)


def test_an_s3_client_for_aws_has_the_same_endpoint() -> None:
    config = Config(s3={"addressing_style": "auto"})
    for region in ("us-east-1", "eu-central-1", "cn-north-1"):
        stock = boto3.Session(region_name=region, aws_access_key_id="a",
                              aws_secret_access_key="b").client("s3", config=config)
        ours = make_client(S3Settings(bucket="b", region=region))
        assert ours.meta.endpoint_url == stock.meta.endpoint_url
        assert ours.meta.region_name == stock.meta.region_name == region


def _retained_by_a_client(session_factory) -> int:
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    session = session_factory()
    session.set_credentials("a", "b")
    client = session.create_client("s3", region_name="eu-west-1",
                                   endpoint_url="http://127.0.0.1:9")
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    del client, session
    return retained


def test_a_client_keeps_megabytes_less_than_with_the_whole_table() -> None:
    _retained_by_a_client(botocore.session.Session)  # botocore's modules imported first
    tracemalloc.start()
    try:
        stock = _retained_by_a_client(botocore.session.Session)
        lean = _retained_by_a_client(lean_botocore_session)
    finally:
        tracemalloc.stop()
    assert lean <= stock - (4 << 20), (stock, lean)
