"""A stand-in for ``aws s3api`` where the AWS CLI is not installed (as in CI).

It does exactly the two calls of docs/FORMAT.md section 9, with the CLI's
arguments and output (``--query`` through jmespath, ``--output text`` as
tab-separated rows), over boto3 and the same ``AWS_*`` environment::

    python aws_s3api_shim.py s3api [--endpoint-url URL] list-object-versions \\
        --bucket B --prefix P [--query Q] [--output text|json]
    python aws_s3api_shim.py s3api [--endpoint-url URL] get-object \\
        --bucket B --key K [--version-id=V] [--range bytes=A-B] OUTFILE

Anything else exits non-zero with one line.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import boto3
import jmespath


def _parse(argv: list[str]) -> tuple[str, dict[str, str], list[str]]:
    options: dict[str, str] = {}
    positional: list[str] = []
    words = iter(argv)
    for word in words:
        if word.startswith("--") and "=" in word:
            name, value = word[2:].split("=", 1)
            options[name] = value
        elif word.startswith("--"):
            # as the AWS CLI's argparse: a separate value that starts with "-" is
            # taken for an option (RGW version ids can: write --version-id="$VID")
            value = next(words, None)
            if value is None or value.startswith("-"):
                sys.exit(f"argument {word}: expected one argument")
            options[word[2:]] = value
        else:
            positional.append(word)
    if len(positional) < 2 or positional[0] != "s3api":
        sys.exit("usage: s3api COMMAND ...")
    return positional[1], options, positional[2:]


def _text(value: Any) -> str:
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "\n".join("\t".join(_text(v) for v in row) for row in value)
        return "\t".join(_text(v) for v in value)
    if value is None:
        return "None"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


ACCEPTED = {"list-object-versions": {"bucket", "prefix", "query", "output"},
            "get-object": {"bucket", "key", "version-id", "range"}}


def main(argv: list[str]) -> int:
    command, options, rest = _parse(argv)
    endpoint = options.pop("endpoint-url", None)
    unknown = set(options) - ACCEPTED.get(command, set())
    if command not in ACCEPTED or unknown or len(rest) != (command == "get-object"):
        sys.exit(f"not a call this stand-in knows: {command} {sorted(unknown)} {rest}")
    client = boto3.client("s3", endpoint_url=endpoint)
    if command == "list-object-versions":
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=options["bucket"], Prefix=options.get("prefix", ""))
        result: dict[str, Any] = {"Versions": [], "DeleteMarkers": []}
        for page in pages:
            result["Versions"] += page.get("Versions", [])
            result["DeleteMarkers"] += page.get("DeleteMarkers", [])
        value = _plain(result)
        if "query" in options:
            value = jmespath.search(options["query"], value)
        print(_text(value) if options.get("output") == "text" else json.dumps(value, indent=4))
        return 0
    args = {"Bucket": options["bucket"], "Key": options["key"]}
    if "version-id" in options:
        args["VersionId"] = options["version-id"]
    if "range" in options:
        args["Range"] = options["range"]
    response = client.get_object(**args)
    with open(rest[0], "wb") as out:
        for block in response["Body"].iter_chunks(1 << 20):
            out.write(block)
    del response["Body"]
    print(json.dumps(_plain(response), indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
