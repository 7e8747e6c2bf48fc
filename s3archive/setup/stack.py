"""The CloudFormation method: create (or update) the stack and wait for it."""

from __future__ import annotations

import logging
from typing import Any

from s3archive.errors import StoreError
from s3archive.setup import cloudformation
from s3archive.setup.spec import BucketSpec
from s3archive.store.errors import describe_error, error_code

log = logging.getLogger(__name__)


def deploy_stack(cfn: Any, spec: BucketSpec, stack_name: str,
                 wait_seconds: int = 1800) -> dict[str, str]:
    """Deploy the template; return the stack's outputs."""
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    body = cloudformation.render(spec)
    try:
        if _stack_exists(cfn, stack_name):
            try:
                cfn.update_stack(StackName=stack_name, TemplateBody=body,
                                 Capabilities=cloudformation.CAPABILITIES)
            except ClientError as err:
                if "No updates are to be performed" not in str(err):
                    raise
                log.info("stack %s is up to date", stack_name)
            else:
                log.info("updating stack %s", stack_name)
                _wait(cfn, "stack_update_complete", stack_name, wait_seconds)
        else:
            log.info("creating stack %s", stack_name)
            cfn.create_stack(StackName=stack_name, TemplateBody=body,
                             Capabilities=cloudformation.CAPABILITIES,
                             Tags=[{"Key": "created-by", "Value": "s3archive"}])
            _wait(cfn, "stack_create_complete", stack_name, wait_seconds)
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except WaiterError as err:
        raise StoreError(f"stack {stack_name} did not complete: {err.last_response.get('Stacks', [{}])[0].get('StackStatusReason') or err}") from None
    except (ClientError, BotoCoreError) as err:
        raise StoreError(f"stack {stack_name}: {describe_error(err)}") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _stack_exists(cfn: Any, stack_name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as err:
        if error_code(err) == "ValidationError" and "does not exist" in str(err):
            return False
        raise
    return any(s["StackStatus"] != "DELETE_COMPLETE" for s in stacks)


def _wait(cfn: Any, waiter: str, stack_name: str, wait_seconds: int) -> None:
    delay = 5
    cfn.get_waiter(waiter).wait(StackName=stack_name,
                                WaiterConfig={"Delay": delay,
                                              "MaxAttempts": max(1, wait_seconds // delay)})
