"""The CloudFormation template, built as a dict and rendered to JSON."""

from __future__ import annotations

import json
from typing import Any

from s3archive import __version__
from s3archive.setup import lifecycle, policies
from s3archive.setup.spec import ROLE_KINDS, SHARED_ROLE_KINDS, BucketSpec

CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
_LOGICAL = {"backup": "Backup", "restore": "Restore", "audit": "Audit"}


def template(spec: BucketSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {"Bucket": _bucket(spec)}
    if spec.bucket_policy:
        resources["BucketPolicy"] = {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": {"Ref": "Bucket"},
                           "PolicyDocument": _sub(policies.bucket_policy(spec))}}
    names = spec.names
    for kind in ROLE_KINDS:
        logical = _LOGICAL[kind]
        resources[f"{logical}Policy"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {"ManagedPolicyName": names.policies[kind],
                           "Description": f"s3archive {kind} access to {spec.bucket}",
                           "PolicyDocument": _sub(policies.ROLE_POLICIES[kind](spec))}}
        if kind in SHARED_ROLE_KINDS:
            resources[f"{logical}Role"] = {
                "Type": "AWS::IAM::Role",
                "Properties": {"RoleName": names.roles[kind],
                               "AssumeRolePolicyDocument": _sub(policies.trust_policy(kind)),
                               "ManagedPolicyArns": [{"Ref": f"{logical}Policy"}]}}
        resources[f"{logical}Group"] = {
            "Type": "AWS::IAM::Group",
            "Properties": {"GroupName": names.groups[kind],
                           "ManagedPolicyArns": [{"Ref": f"{logical}Policy"}]}}
    # Each backup host with a role gets its own: the shared backup policy plus
    # its own runs (users get theirs from write-config --create-user).
    for index, host in enumerate(spec.hosts, 1):
        resources[f"Host{index}Policy"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {"ManagedPolicyName": names.host_policy(host),
                           "Description": f"s3archive backup host {host}: its runs in "
                                          f"{spec.bucket}",
                           "PolicyDocument": _sub(policies.host_policy(spec, host))}}
        resources[f"Host{index}Role"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {"RoleName": names.host_role(host),
                           "AssumeRolePolicyDocument": _sub(policies.trust_policy("backup")),
                           "ManagedPolicyArns": [{"Ref": "BackupPolicy"},
                                                 {"Ref": f"Host{index}Policy"}],
                           "Tags": [{"Key": "s3archive-host", "Value": host}]}}
        resources[f"Host{index}InstanceProfile"] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": names.host_role(host),
                           "Roles": [{"Ref": f"Host{index}Role"}]}}
    outputs: dict[str, Any] = {"BucketName": _output("Bucket", {"Ref": "Bucket"}),
                               "BucketArn": _output("BucketArn", {"Fn::GetAtt": ["Bucket", "Arn"]})}
    for kind in ROLE_KINDS:
        logical = _LOGICAL[kind]
        if kind in SHARED_ROLE_KINDS:
            outputs[f"{logical}RoleArn"] = _output(f"{logical}RoleArn",
                                                   {"Fn::GetAtt": [f"{logical}Role", "Arn"]})
        outputs[f"{logical}GroupName"] = _output(f"{logical}GroupName", {"Ref": f"{logical}Group"})
    for index, host in enumerate(spec.hosts, 1):
        outputs[f"Host{index}RoleArn"] = {
            **_output(f"Host{index}RoleArn", {"Fn::GetAtt": [f"Host{index}Role", "Arn"]}),
            "Description": f"role of backup host {host}"}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"s3archive {__version__}: Object Lock bucket {spec.bucket} "
                       "with backup, restore and audit access",
        "Resources": resources,
        "Outputs": outputs,
    }


def render(spec: BucketSpec) -> str:
    return json.dumps(template(spec), indent=2) + "\n"


def _bucket(spec: BucketSpec) -> dict[str, Any]:
    if spec.kms_key_id:
        default: dict[str, Any] = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": spec.kms_key_id}
    else:
        default = {"SSEAlgorithm": "AES256"}
    return {
        "Type": "AWS::S3::Bucket",
        # A backup bucket outlives its stack: deleting the stack keeps the data.
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": spec.bucket,
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": spec.lock_mode,
                                              "Days": spec.default_retention_days}}},
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": default,
                "BucketKeyEnabled": bool(spec.kms_key_id)}]},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True, "BlockPublicPolicy": True,
                "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {"Rules": lifecycle.cloudformation_rules(spec.cold_after)},
        },
    }


def _output(name: str, value: Any) -> dict[str, Any]:
    return {"Value": value, "Export": {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{name}"}}}


def _sub(document: Any) -> Any:
    """Wrap strings that use pseudo parameters in Fn::Sub."""
    if isinstance(document, dict):
        return {k: _sub(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_sub(v) for v in document]
    if isinstance(document, str) and "${" in document:
        return {"Fn::Sub": document}
    return document
