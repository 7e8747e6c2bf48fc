"""``create-resources``: build the bucket and IAM by one method, then read the
bucket back and report every difference from what was asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s3archive.setup.bucket_check import CheckResult, check_bucket, check_iam
from s3archive.setup.bucket_setup import SetupReport, configure_bucket, resolved_bucket_policy
from s3archive.setup.clients import AdminClients
from s3archive.setup.iam_setup import create_iam
from s3archive.setup.spec import BucketSpec
from s3archive.setup.stack import deploy_stack

METHODS = ("cloudformation", "s3-api")


@dataclass
class CreateResult:
    method: str
    check: CheckResult
    outputs: dict[str, str] = field(default_factory=dict)
    setup: SetupReport | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": self.method, "outputs": self.outputs,
                                "check": self.check.to_json()}
        if self.setup is not None:
            data.update(created=self.setup.created, applied=self.setup.applied,
                        rejected=self.setup.rejected, notes=self.setup.notes)
        return data


def default_method(endpoint_url: str | None) -> str:
    return "s3-api" if endpoint_url else "cloudformation"


def create_resources(spec: BucketSpec, method: str, *, stack_name: str,
                     with_iam: bool) -> CreateResult:
    clients = AdminClients(region=spec.region, endpoint_url=spec.endpoint_url)
    account = clients.account_id()
    outputs: dict[str, str] = {}
    report: SetupReport | None = None
    if method == "cloudformation":
        outputs = deploy_stack(clients.service("cloudformation"), spec, stack_name)
    else:
        report = configure_bucket(clients.s3(), spec, account)
        outputs["BucketName"] = spec.bucket
        if with_iam:
            iam = create_iam(clients.service("iam"), spec, account or "")
            for kind, arn in iam.role_arns.items():
                if kind.startswith("host:"):
                    outputs[f"Host{spec.hosts.index(kind[5:]) + 1}RoleArn"] = arn
                else:
                    outputs[f"{kind.capitalize()}RoleArn"] = arn
            for kind, name in iam.group_names.items():
                outputs[f"{kind.capitalize()}GroupName"] = name
    expected = resolved_bucket_policy(spec, account) if spec.bucket_policy else None
    check = check_bucket(clients.s3(), spec, expected)
    if method == "cloudformation" or with_iam:
        check.differences += check_iam(clients.service("iam"), spec)
    return CreateResult(method=method, check=check, outputs=outputs, setup=report)

