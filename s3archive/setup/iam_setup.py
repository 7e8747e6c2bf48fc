"""IAM through the IAM API: the S3-API method's policies, roles and groups,
and ``write-config --create-user``'s user and access key."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from s3archive.errors import StoreError, UsageError
from s3archive.setup import policies
from s3archive.setup.spec import ROLE_KINDS, BucketSpec
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
            document = policies.resolve(policies.ROLE_POLICIES[kind](spec),
                                        partition=spec.partition, account_id=account_id,
                                        region=spec.region)
            policy_arns[kind] = _ensure_policy(iam, names.policies[kind], document,
                                               f"s3archive {kind} access to {spec.bucket}")
            trust = policies.resolve(policies.trust_policy(kind), partition=spec.partition,
                                     account_id=account_id, region=spec.region)
            role_arns[kind] = _ensure_role(iam, names.roles[kind], trust)
            iam.attach_role_policy(RoleName=names.roles[kind], PolicyArn=policy_arns[kind])
            _ensure(lambda: iam.create_group(GroupName=names.groups[kind]))
            iam.attach_group_policy(GroupName=names.groups[kind], PolicyArn=policy_arns[kind])
    except (ClientError, BotoCoreError) as err:
        raise StoreError(f"creating IAM resources for {spec.bucket}: {describe_error(err)}") from None
    return IamResources(policy_arns=policy_arns, role_arns=role_arns, group_names=dict(names.groups))


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


def create_user_with_key(iam: Any, user_name: str, group_name: str) -> AccessKey:
    """An IAM user in ``group_name`` with a fresh access key."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        iam.get_group(GroupName=group_name)
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise UsageError(f"--create-user {user_name}: IAM group {group_name} does not exist "
                             "(run create-resources first)") from None
        raise StoreError(f"reading IAM group {group_name}: {describe_error(err)}") from None
    try:
        _ensure(lambda: iam.create_user(UserName=user_name,
                                        Tags=[{"Key": "created-by", "Value": "s3archive"}]))
        iam.add_user_to_group(GroupName=group_name, UserName=user_name)
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
    except (ClientError, BotoCoreError) as err:
        raise StoreError(f"creating IAM user {user_name}: {describe_error(err)}") from None
    log.info("created access key %s for IAM user %s (group %s)",
             key["AccessKeyId"], user_name, group_name)
    return AccessKey(user_name=user_name, access_key_id=key["AccessKeyId"],
                     secret_access_key=key["SecretAccessKey"])
