"""The store's botocore sessions look for the data of S3 and STS only
(store/service_loader.py): the same answers as botocore's loader for those,
without listing every service's directory at every command's start."""

from __future__ import annotations

import json
import os

import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import Loader

from s3archive.store import service_loader
from s3archive.store.s3_store import ENDPOINT_SERVICES, lean_botocore_session

TYPES = ["service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2"]


@pytest.mark.parametrize("type_name", TYPES)
def test_the_stores_services_are_listed_as_botocore_lists_them(type_name: str) -> None:
    stock = Loader().list_available_services(type_name)
    ours = service_loader.create_loader(ENDPOINT_SERVICES).list_available_services(type_name)
    assert ours == [name for name in stock if name in ENDPOINT_SERVICES]
    assert "s3" in ours


def test_an_extra_data_path_is_searched_as_botocore_searches_it(tmp_path) -> None:
    # (AWS_DATA_PATH: a model of a service botocore has, and one it has not)
    for service in ("sts", "example"):
        version = tmp_path / service / "2099-01-01"
        version.mkdir(parents=True)
        (version / "paginators-1.json").write_text(json.dumps({"pagination": {}}))
    (tmp_path / "empty-service").mkdir()
    paths = os.pathsep.join([str(tmp_path), str(tmp_path / "missing")])
    for services in ({"sts", "example", "empty-service"}, ENDPOINT_SERVICES):
        ours = service_loader.create_loader(services, paths)
        stock = Loader(extra_search_paths=[str(tmp_path), str(tmp_path / "missing")])
        assert ours.search_paths == stock.search_paths
        for type_name in TYPES:
            assert ours.list_available_services(type_name) == \
                [name for name in stock.list_available_services(type_name) if name in services]
        assert ours.determine_latest_version("sts", "paginators-1") == "2099-01-01"


def test_listing_looks_into_the_stores_services_only(monkeypatch) -> None:
    listed: list[str] = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real(path))
    loader = service_loader.create_loader(ENDPOINT_SERVICES)
    loader.list_available_services("service-2")
    assert listed and all(os.path.basename(path) in ENDPOINT_SERVICES for path in listed)
    assert len(listed) <= len(ENDPOINT_SERVICES) * len(loader.search_paths)


def test_a_lean_session_makes_s3_and_sts_clients_and_knows_no_other_service() -> None:
    core = lean_botocore_session()
    core.set_credentials("a", "b")
    assert isinstance(core.get_component("data_loader"), service_loader.ServicesLoader)
    for service in sorted(ENDPOINT_SERVICES):
        client = core.create_client(service, region_name="eu-west-1")
        assert client.meta.service_model.service_name == service
    assert core.create_client("s3", region_name="eu-west-1").meta.service_model \
        .operation_model("PutObject").http["method"] == "PUT"
    with pytest.raises(UnknownServiceError):
        core.create_client("iam", region_name="eu-west-1")
