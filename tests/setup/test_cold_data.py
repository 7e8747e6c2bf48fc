"""create-resources --cold-after at the rule level: the exact lifecycle rule
set (S3 API and CloudFormation say the same), the bounds of DAYS, and the
bucket check's reading of transition rules (storage_classes.py).  The rules
on a real store: test_setup_rgw.py; transitions and the readers: test_cold_rgw.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.setup import lifecycle
from s3archive.setup.cloudformation import template
from s3archive.setup.spec import BucketSpec
from s3archive.storage_classes import misplaced_transitions

EXPIRY_RULES = [
    {"ID": "s3archive-expire-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
     "Expiration": {"Days": 1}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    {"ID": "s3archive-remove-expired-delete-markers", "Status": "Enabled",
     "Filter": {"Prefix": ""}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
    {"ID": "s3archive-abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
]


def cold(days: int, noncurrent: int) -> dict:
    return {"ID": "s3archive-cold-data", "Status": "Enabled", "Filter": {"Prefix": "data/"},
            "Transitions": [{"Days": days, "StorageClass": "GLACIER_IR"}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": noncurrent,
                                              "StorageClass": "GLACIER_IR"}]}


def test_without_cold_after_the_rules_are_the_expiry_rules_unchanged() -> None:
    assert lifecycle.s3_rules() == EXPIRY_RULES


@pytest.mark.parametrize("days, noncurrent", [(1, 1), (2, 1), (30, 29), (36500, 36499)])
def test_cold_after_adds_exactly_one_transition_of_data_packs(days: int,
                                                              noncurrent: int) -> None:
    """A pack is current for a day (then the expiry rule's delete marker makes
    it non-current): non-current versions move DAYS - 1 days later (S3
    counts non-current days from 1), current ones at DAYS."""
    assert lifecycle.s3_rules(days) == EXPIRY_RULES + [cold(days, noncurrent)]


def test_cloudformation_says_the_same_as_the_s3_api() -> None:
    spec = BucketSpec(bucket="acme-backups", cold_after=45)
    rules = template(spec)["Resources"]["Bucket"]["Properties"]["LifecycleConfiguration"][
        "Rules"]
    assert rules[:3] == lifecycle.cloudformation_rules()  # the expiry rules unchanged
    assert rules[3] == {"Id": "s3archive-cold-data", "Status": "Enabled", "Prefix": "data/",
                        "Transitions": [{"TransitionInDays": 45, "StorageClass": "GLACIER_IR"}],
                        "NoncurrentVersionTransitions": [{"TransitionInDays": 44,
                                                          "StorageClass": "GLACIER_IR"}]}
    # the same days, class and prefix as the S3 API rule
    s3_rule = lifecycle.s3_rules(45)[3]
    assert (rules[3]["Prefix"], rules[3]["Transitions"][0]["TransitionInDays"],
            rules[3]["NoncurrentVersionTransitions"][0]["TransitionInDays"]) == \
        (s3_rule["Filter"]["Prefix"], s3_rule["Transitions"][0]["Days"],
         s3_rule["NoncurrentVersionTransitions"][0]["NoncurrentDays"])
    assert len(template(BucketSpec(bucket="acme-backups"))["Resources"]["Bucket"][
        "Properties"]["LifecycleConfiguration"]["Rules"]) == 3


def _create_resources(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["create-resources", "--bucket", "acme-backups",
                                    "--print-template", *args],
                              env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                                   "AWS_CONFIG_FILE": "/nonexistent",
                                   "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                                   "AWS_EC2_METADATA_DISABLED": "true"})


@pytest.mark.parametrize("value", ["0", "-3", "36501"])
def test_cold_after_out_of_bounds_is_one_clear_line(value: str) -> None:
    result = _create_resources("--cold-after", value)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"s3archive: error: --cold-after {value}: must be between 1 and 36500 days"]


def test_cold_after_not_a_number_is_a_usage_error() -> None:
    result = _create_resources("--cold-after", "soon")
    assert result.exit_code == 2
    assert "'--cold-after': 'soon' is not a valid integer" in result.output
    assert "Traceback" not in result.output


def test_printed_template_carries_the_rule() -> None:
    result = _create_resources("--cold-after", "90")
    assert result.exit_code == 0, result.output
    rules = json.loads(result.output)["Resources"]["Bucket"]["Properties"][
        "LifecycleConfiguration"]["Rules"]
    assert [r["Id"] for r in rules][-1] == "s3archive-cold-data"
    assert rules[-1]["Transitions"] == [{"TransitionInDays": 90, "StorageClass": "GLACIER_IR"}]


# ------------------------------------------------------------ the check's reading


def test_the_rules_written_pass_the_check() -> None:
    for days in (None, 1, 30):
        rules = lifecycle.s3_rules(days)
        assert lifecycle.missing_behaviours(rules, days) == []
        assert misplaced_transitions(rules) == []


def test_a_data_transition_is_accepted_even_when_not_asked_for() -> None:
    assert lifecycle.missing_behaviours(lifecycle.s3_rules(30)) == []
    assert misplaced_transitions(lifecycle.s3_rules(30)) == []


def test_a_missing_or_different_cold_rule_is_named() -> None:
    assert lifecycle.missing_behaviours(EXPIRY_RULES, 30) == [
        "transition of data/ to GLACIER_IR after 30 days (non-current versions after 29)"]
    assert lifecycle.missing_behaviours(lifecycle.s3_rules(60), 30) == [
        "transition of data/ to GLACIER_IR after 30 days (non-current versions after 29)"]
    disabled = [*EXPIRY_RULES, {**cold(30, 29), "Status": "Disabled"}]
    assert lifecycle.missing_behaviours(disabled, 30) != []


@pytest.mark.parametrize("where, flagged", [
    ("", "meta/, runs/, keys/, packs/"),  # the whole bucket
    ("runs/", "runs/"),
    ("runs/web1/", "runs/"),  # a part of runs/ is still runs/
    ("r", "runs/"),  # a prefix of runs/ covers it
    ("meta/", "meta/"),
    ("keys/", "keys/"),
    ("packs/", "packs/"),
])
def test_a_transition_that_may_move_metadata_is_flagged(where: str, flagged: str) -> None:
    rule = {"ID": "operator", "Status": "Enabled", "Filter": {"Prefix": where},
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 7,
                                              "StorageClass": "STANDARD_IA"}]}
    found = misplaced_transitions([*lifecycle.s3_rules(30), rule])
    assert found == [f"rule operator (prefix {where!r}) moves STANDARD_IA objects under "
                     f"{flagged}: metadata and format-1 packs must stay STANDARD"]


def test_other_rule_shapes_are_read_too() -> None:
    legacy = {"ID": "legacy", "Status": "Enabled", "Prefix": "runs/",
              "Transition": {"Days": 5, "StorageClass": "GLACIER_IR"}}
    tagged = {"ID": "and", "Status": "Enabled",
              "Filter": {"And": {"Prefix": "meta/", "ObjectSizeGreaterThan": 1}},
              "Transitions": [{"Days": 5, "StorageClass": "GLACIER_IR"}]}
    assert [line.split(" ")[1] for line in misplaced_transitions([legacy, tagged])] == [
        "legacy", "and"]
    assert misplaced_transitions([{**legacy, "Status": "Disabled"}]) == []
    # expiry without a transition moves nothing
    assert misplaced_transitions(EXPIRY_RULES) == []


@pytest.mark.parametrize("cls", ["GLACIER", "DEEP_ARCHIVE"])
def test_data_into_an_archival_class_is_flagged(cls: str) -> None:
    rule = {**cold(30, 29), "ID": "deep",
            "Transitions": [{"Days": 30, "StorageClass": cls}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 29, "StorageClass": cls}]}
    assert misplaced_transitions([rule]) == [
        f"rule deep (prefix 'data/') moves data packs to {cls}: restore cannot read them "
        "without a restore request; use --cold-after (GLACIER_IR)"]
