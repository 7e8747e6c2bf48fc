"""A small IAM policy evaluator for template-level tests of our statements.

It implements what our documents use -- Allow/Deny, Action and Resource
wildcards, and the condition operators Null, BoolIfExists,
NumericGreaterThan, StringEquals, StringNotEquals, StringLike and
ArnNotEquals -- with AWS's
rules (several identity policies are evaluated as one: ``combined``): an
explicit Deny wins, otherwise an Allow is needed (identity policies) or
nothing is denied (bucket policies evaluated alone).  Missing condition keys
follow AWS: a plain operator does not match, ...IfExists and negated
operators do, Null tests presence.
"""

from __future__ import annotations

import fnmatch
from typing import Any


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower() if p.startswith("s3:") or p.startswith("kms:")
                                   else value, p.lower() if p.startswith(("s3:", "kms:")) else p)
               for p in _as_list(patterns))


def _condition_holds(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            wanted_values = [str(w) for w in _as_list(wanted)]
            present = key in context
            actual = str(context.get(key, ""))
            if operator == "Null":
                if (wanted_values[0] == "true") != (not present):
                    return False
            elif operator == "BoolIfExists":
                if present and actual.lower() not in [w.lower() for w in wanted_values]:
                    return False
            elif operator == "NumericGreaterThan":
                if not present or not float(actual) > float(wanted_values[0]):
                    return False
            elif operator == "StringEquals":
                if not present or actual not in wanted_values:
                    return False
            elif operator == "StringNotEquals":
                if present and actual in wanted_values:
                    return False
            elif operator == "StringLike":
                if not present or not any(fnmatch.fnmatchcase(actual, w) for w in wanted_values):
                    return False
            elif operator == "ArnNotEquals":
                if present and actual in wanted_values:
                    return False
            else:
                raise AssertionError(f"evaluator does not know condition operator {operator}")
    return True


def combined(*policies: dict[str, Any]) -> dict[str, Any]:
    """The identity policies of one principal, evaluated together as AWS does."""
    return {"Version": "2012-10-17",
            "Statement": [s for policy in policies for s in policy["Statement"]]}


def matching_statements(policy: dict[str, Any], action: str, resource: str,
                        context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    context = context or {}
    found = []
    for statement in policy["Statement"]:
        if "NotAction" in statement or "NotResource" in statement:
            raise AssertionError("evaluator does not handle NotAction/NotResource")
        if not _matches(statement["Action"], action):
            continue
        if not _matches(statement["Resource"], resource):
            continue
        if _condition_holds(statement.get("Condition", {}), context):
            found.append(statement)
    return found


def decision(policy: dict[str, Any], action: str, resource: str,
             context: dict[str, Any] | None = None) -> str:
    """"Deny" (explicit), "Allow", or "ImplicitDeny"."""
    statements = matching_statements(policy, action, resource, context)
    if any(s["Effect"] == "Deny" for s in statements):
        return "Deny"
    if any(s["Effect"] == "Allow" for s in statements):
        return "Allow"
    return "ImplicitDeny"


def denying_sids(policy: dict[str, Any], action: str, resource: str,
                 context: dict[str, Any] | None = None) -> set[str]:
    return {s.get("Sid", "") for s in matching_statements(policy, action, resource, context)
            if s["Effect"] == "Deny"}
