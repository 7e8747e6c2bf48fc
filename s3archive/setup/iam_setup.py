"""IAM through the IAM API: the S3-API method's policies, roles and groups,
and ``write-config --create-user``'s user and access key."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from s3archive.errors import StoreError, UsageError
from s3archive.setup import policies
from s3archive.setup.spec import ROLE_KINDS, SHARED_ROLE_KINDS, BucketSpec, ResourceNames
from s3archive.store.errors import describe_error, error_code

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IamResources:
    policy_arns: dict[str, str]
    role_arns: dict[str, str]
    group_names: dict[str, str]


@dataclass(frozen=True)
class AccessKey:
    user_name: str
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never show the secret
        return f"AccessKey(user_name={self.user_name!r}, access_key_id={self.access_key_id!r})"


def create_iam(iam: Any, spec: BucketSpec, account_id: str) -> IamResources:
    from botocore.exceptions import BotoCoreError, ClientError

    names = spec.names
    policy_arns, role_arns = {}, {}
    try:
        for kind in ROLE_KINDS:
            document = _resolved(policies.ROLE_POLICIES[kind](spec), spec, account_id)
            policy_arns[kind] = _ensure_policy(iam, names.policies[kind], document,
                                               f"s3archive {kind} access to {spec.bucket}")
            if kind in SHARED_ROLE_KINDS:
                role_arns[kind] = _ensure_role(iam, names.roles[kind],
                                               _resolved(policies.trust_policy(kind), spec,
                                                         account_id))
                iam.attach_role_policy(RoleName=names.roles[kind], PolicyArn=policy_arns[kind])
            _ensure(lambda: iam.create_group(GroupName=names.groups[kind]))
            iam.attach_group_policy(GroupName=names.groups[kind], PolicyArn=policy_arns[kind])
        for host in spec.hosts:
            role_arns[f"host:{host}"] = _ensure_host_role(iam, spec, host, account_id,
                                                          policy_arns["backup"])
    except (ClientError, BotoCoreError) as err:
        raise StoreError(f"creating IAM resources for {spec.bucket}: {describe_error(err)}") from None
    return IamResources(policy_arns=policy_arns, role_arns=role_arns, group_names=dict(names.groups))


def _resolved(document: dict[str, Any], spec: BucketSpec, account_id: str) -> dict[str, Any]:
    return dict(policies.resolve(document, partition=spec.partition, account_id=account_id,
                                 region=spec.region))


def _ensure_host_role(iam: Any, spec: BucketSpec, host: str, account_id: str,
                      backup_policy_arn: str) -> str:
    """A backup host's own role and instance profile: the shared backup
    policy and the host's policy (its runs only)."""
    from botocore.exceptions import ClientError

    names = spec.names
    role = names.host_role(host)
    host_arn = _ensure_policy(iam, names.host_policy(host),
                              _resolved(policies.host_policy(spec, host), spec, account_id),
                              f"s3archive backup host {host}: its runs in {spec.bucket}")
    arn = _ensure_role(iam, role, _resolved(policies.trust_policy("backup"), spec, account_id))
    iam.tag_role(RoleName=role, Tags=[{"Key": "s3archive-host", "Value": host}])
    for policy_arn in (backup_policy_arn, host_arn):
        iam.attach_role_policy(RoleName=role, PolicyArn=policy_arn)
    _ensure(lambda: iam.create_instance_profile(InstanceProfileName=role))
    try:
        iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    except ClientError as err:
        if error_code(err) != "LimitExceeded":  # the role is already in it
            raise
    return arn


def _ensure(call: Any) -> bool:
    """Run a create call; False when the entity already exists."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as err:
        if error_code(err) == "EntityAlreadyExists":
            return False
        raise
    return True


def _ensure_policy(iam: Any, name: str, document: dict[str, Any], description: str) -> str:
    from botocore.exceptions import ClientError

    text = json.dumps(document)
    try:
        return str(iam.create_policy(PolicyName=name, PolicyDocument=text,
                                     Description=description)["Policy"]["Arn"])
    except ClientError as err:
        if error_code(err) != "EntityAlreadyExists":
            raise
    arn = next(p["Arn"] for page in iam.get_paginator("list_policies").paginate(Scope="Local")
               for p in page["Policies"] if p["PolicyName"] == name)
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=text, SetAsDefault=True)
    return str(arn)


def _ensure_role(iam: Any, name: str, trust: dict[str, Any]) -> str:
    from botocore.exceptions import ClientError

    try:
        return str(iam.create_role(RoleName=name,
                                   AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
    except ClientError as err:
        if error_code(err) != "EntityAlreadyExists":
            raise
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    return str(iam.get_role(RoleName=name)["Role"]["Arn"])


def create_user_with_key(iam: Any, spec: BucketSpec, user_name: str, group_name: str,
                         host: str, account_id: str) -> AccessKey:
    """An IAM user in ``group_name`` (the shared backup policy) with the
    inline policy of ``host`` (its runs only) and a fresh access key.

    A user may serve one host: an existing user that already holds another
    host's policy for this bucket is refused (it would write both hosts' runs).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    names = spec.names
    try:
        iam.get_group(GroupName=group_name)
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise UsageError(f"--create-user {user_name}: IAM group {group_name} does not exist "
                             "(run create-resources first)") from None
        raise StoreError(f"reading IAM group {group_name}: {describe_error(err)}") from None
    own = names.host_policy(host)
    try:
        created = _ensure(lambda: iam.create_user(
            UserName=user_name, Tags=[{"Key": "created-by", "Value": "s3archive"},
                                      {"Key": "s3archive-host", "Value": host}]))
        if not created:
            others = [name for name in _inline_policies(iam, user_name)
                      if _is_host_policy(names, name) and name != own]
            if others:
                raise UsageError(f"--create-user {user_name}: the user already holds "
                                 f"{', '.join(others)}; one IAM user per host (choose "
                                 "another name)")
        iam.add_user_to_group(GroupName=group_name, UserName=user_name)
        iam.put_user_policy(UserName=user_name, PolicyName=own, PolicyDocument=json.dumps(
            _resolved(policies.host_policy(spec, host), spec, account_id)))
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
    except (ClientError, BotoCoreError) as err:
        raise StoreError(f"creating IAM user {user_name}: {describe_error(err)}") from None
    log.info("created access key %s for IAM user %s (group %s, runs/%s/)",
             key["AccessKeyId"], user_name, group_name, host)
    return AccessKey(user_name=user_name, access_key_id=key["AccessKeyId"],
                     secret_access_key=key["SecretAccessKey"])


def _inline_policies(iam: Any, user_name: str) -> list[str]:
    return [name for page in iam.get_paginator("list_user_policies").paginate(UserName=user_name)
            for name in page["PolicyNames"]]


def _is_host_policy(names: ResourceNames, policy_name: str) -> bool:
    return policy_name.startswith(names.host_policy(""))
