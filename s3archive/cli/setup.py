"""Setup commands: ``create-resources`` (bucket and IAM) and ``write-config``
(this host's configuration, credentials, pickers, snapshotters, systemd)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import click

from s3archive.config import MAX_RETENTION_DAYS, RetentionSettings
from s3archive.crypto.keys import Recipient
from s3archive.errors import CommandFailed, UsageError
from s3archive.setup.spec import BucketSpec, default_stack_name

_DAYS = click.IntRange(1, MAX_RETENTION_DAYS)
_DEFAULTS = RetentionSettings()


@click.command("create-resources")
@click.option("--bucket", required=True, help="Bucket to create (or configure, if yours).")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--endpoint-url", default=None,
              help="S3-compatible endpoint (every service is asked there).")
@click.option("--method", type=click.Choice(["cloudformation", "s3-api"]), default=None,
              help="Default: cloudformation on AWS, s3-api with --endpoint-url.")
@click.option("--stack-name", default=None, help="Default: s3archive-BUCKET.")
@click.option("--lock-mode", type=click.Choice(["GOVERNANCE", "COMPLIANCE"]),
              default="GOVERNANCE", show_default=True)
@click.option("--default-retention-days", type=_DAYS, default=1, show_default=True,
              help="The bucket's default retention (a safety net: s3archive locks every PUT).")
@click.option("--max-retention-days", type=_DAYS, default=_DEFAULTS.max_days, show_default=True,
              help="The bucket policy denies locks longer than this.")
@click.option("--kms-key-id", default=None, help="SSE-KMS key (default: SSE-S3).")
@click.option("--no-bucket-policy", is_flag=True,
              help="Skip the bucket policy (moto applies every Deny to every caller).")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A backup host that gets a role and instance profile of its own, "
                   "writing only runs/NAME/ (repeat; hosts with IAM users get theirs "
                   "from write-config --create-user).")
@click.option("--legal-hold", is_flag=True,
              help="Let those hosts place (never lift) legal holds: for "
                   "[retention] legal_hold = true.")
@click.option("--cold-after", type=int, default=None, metavar="DAYS",
              help="Add a lifecycle rule moving data packs (data/, storage format 2) to "
                   "S3 Glacier Instant Retrieval DAYS days after they are written "
                   "(1-36500); metadata, runs and format-1 packs stay STANDARD. Reads "
                   "need no restore request but pay a retrieval fee per GB.")
@click.option("--iam/--no-iam", "with_iam", default=None,
              help="s3-api method: also create the IAM policies, roles and groups "
                   "(default: on without --endpoint-url). CloudFormation always does.")
@click.option("--print-template", is_flag=True,
              help="Print the CloudFormation template and exit (no AWS call).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def create_resources_command(bucket: str, region: str, endpoint_url: str | None,
                             method: str | None, stack_name: str | None, lock_mode: str,
                             default_retention_days: int, max_retention_days: int,
                             kms_key_id: str | None, no_bucket_policy: bool,
                             hosts: tuple[str, ...], legal_hold: bool, cold_after: int | None,
                             with_iam: bool | None, print_template: bool, as_json: bool) -> None:
    """Create the Object Lock bucket, its policy and the backup, restore and
    audit IAM groups (restore and audit roles too, and a role per --host);
    then read the bucket back and report every difference from what was asked.

    \b
    EXIT STATUS
      0  ok (differences are listed)
      1  the bucket has no Object Lock or no versioning, or a request failed
      2  usage error
    """
    from s3archive.setup import cloudformation
    from s3archive.setup.create_resources import create_resources, default_method

    spec = BucketSpec(bucket=bucket, region=region, lock_mode=lock_mode,
                      default_retention_days=default_retention_days,
                      max_retention_days=max_retention_days, kms_key_id=kms_key_id,
                      bucket_policy=not no_bucket_policy, endpoint_url=endpoint_url,
                      hosts=hosts, legal_hold=legal_hold, cold_after=cold_after)
    if legal_hold and not hosts:
        raise UsageError("--legal-hold applies to the roles of --host NAME; a host with an "
                         "IAM user gets it from write-config --legal-hold")
    if print_template:
        click.echo(cloudformation.render(BucketSpec(**{**spec.__dict__, "endpoint_url": None})),
                   nl=False)
        return
    method = method or default_method(endpoint_url)
    iam = with_iam if with_iam is not None else endpoint_url is None
    if hosts and method == "s3-api" and not iam:
        raise UsageError("--host makes an IAM role: it needs --iam")
    result = create_resources(spec, method, stack_name=stack_name or default_stack_name(bucket),
                              with_iam=iam)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_create_result(result)
    if result.check.fatal:
        raise CommandFailed(f"bucket {result.check.bucket} is not usable as configured "
                            "(the differences are listed above)")


def _print_create_result(result: object) -> None:
    from s3archive.setup.create_resources import CreateResult

    assert isinstance(result, CreateResult)
    if result.setup is not None:
        click.echo(f"bucket {result.check.bucket}: "
                   f"{'created' if result.setup.created else 'already yours, configured'}")
        for item in result.setup.rejected:
            click.echo(f"  rejected by the store: {item}", err=True)
        for note in result.setup.notes:
            click.echo(f"  note: {note}", err=True)
    for key, value in sorted(result.outputs.items()):
        click.echo(f"{key}: {value}")
    if not result.check.differences:
        click.echo(f"check: bucket {result.check.bucket} is configured as asked")
    for difference in result.check.differences:
        level = "error" if difference.fatal else "warning"
        click.echo(f"s3archive: {level}: bucket {result.check.bucket}: {difference}", err=True)


@click.command("write-config")
@click.option("--bucket", required=True)
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--endpoint-url", default=None)
@click.option("--host-name", default=None, help="Default: this machine's host name at run time.")
@click.option("--lock-mode", type=click.Choice(["GOVERNANCE", "COMPLIANCE"]),
              default=_DEFAULTS.mode, show_default=True)
@click.option("--daily-days", type=_DAYS, default=_DEFAULTS.daily_days, show_default=True)
@click.option("--weekly-days", type=_DAYS, default=_DEFAULTS.weekly_days, show_default=True)
@click.option("--monthly-days", type=_DAYS, default=_DEFAULTS.monthly_days, show_default=True)
@click.option("--yearly-days", type=_DAYS, default=_DEFAULTS.yearly_days, show_default=True)
@click.option("--max-retention-days", type=_DAYS, default=_DEFAULTS.max_days, show_default=True)
@click.option("--slack-days", type=click.IntRange(0, 3650), default=_DEFAULTS.slack_days,
              show_default=True)
@click.option("--legal-hold", is_flag=True,
              help="Place a legal hold on every run and what it references (operators "
                   "lift them); with --create-user, the user may place holds.")
@click.option("--profile", default=None, help="Use this AWS profile (exclusive).")
@click.option("--credentials-file", type=click.Path(path_type=Path), default=None,
              help="Use this credentials file (exclusive).")
@click.option("--role-arn", default=None, help="Assume this role (exclusive).")
@click.option("--create-user", default=None, metavar="NAME",
              help="Create IAM user NAME in the backup group, allowed only this host's "
                   "runs (runs/HOST-NAME/); write its new key to the credentials file "
                   "(uses your own credentials for IAM).")
@click.option("--backup-group", default=None, help="Default: the one create-resources made.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write everything below DIR (images, tests); never enables.")
@click.option("--no-enable", is_flag=True, help="Do not enable the timer; print the commands.")
@click.option("--force", is_flag=True, help="Overwrite files the operator changed.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              default=Path("/var/cache/s3archive"), show_default=True)
@click.option("--state-file", type=click.Path(path_type=Path),
              default=Path("/var/lib/s3archive/last-run.json"), show_default=True)
@click.option("--prometheus-textfile", type=click.Path(path_type=Path), default=None,
              metavar="PATH", help="Write node-exporter textfile metrics to PATH after every "
              "run (its directory is made writable in the service).")
@click.option("--recipient", "recipients", multiple=True, metavar="age1...",
              help="Encrypt to this restore key's recipient (repeat, e.g. an operator and "
                   "an escrow key; from s3archive key generate). Recommended.")
@click.option("--dedup-secret", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, metavar="FILE", help="Install this dedup group's secret (a copy "
              "of another host's dedup.key) instead of generating a new one.")
@click.option("--dedup-group", default=None, metavar="NAME",
              help="Share stored content with the plain hosts of this group ([dedup] group; "
                   "default: every host of the bucket); 'none': share nothing.")
def write_config_command(bucket: str, region: str, endpoint_url: str | None,
                         host_name: str | None, lock_mode: str, daily_days: int,
                         weekly_days: int, monthly_days: int, yearly_days: int,
                         max_retention_days: int, slack_days: int, legal_hold: bool,
                         profile: str | None,
                         credentials_file: Path | None, role_arn: str | None,
                         create_user: str | None, backup_group: str | None, root: Path | None,
                         no_enable: bool, force: bool, cache_dir: Path, state_file: Path,
                         prometheus_textfile: Path | None, recipients: tuple[str, ...],
                         dedup_secret: Path | None, dedup_group: str | None) -> None:
    """Write /etc/s3archive (config.toml, credentials, pickers.d/, snapshots.d/)
    and the systemd service and daily timer, then enable the timer.

    Files the operator changed are never overwritten without --force (exit 2
    names them). Examples in pickers.d/ and snapshots.d/ are installed
    disabled: enable one with chmod +x. With --recipient, runs are encrypted
    to those restore keys and a dedup secret is installed (dedup.key, 0600;
    an existing one is kept, never replaced by a new one).

    \b
    EXIT STATUS
      0  ok;  1  an IAM or systemctl call failed;  2  usage error, or files changed
      by the operator
    """
    from s3archive.clock import utc_now
    from s3archive.config import read_dedup_secret_file
    from s3archive.setup.host_config import HostOptions, retention_plan, write_config

    retention = RetentionSettings(mode=lock_mode, daily_days=daily_days, weekly_days=weekly_days,
                                  monthly_days=monthly_days, yearly_days=yearly_days,
                                  max_days=max_retention_days, slack_days=slack_days,
                                  legal_hold=legal_hold)
    if create_user and not host_name:
        # The user may write only runs/<host>/: the configuration names that host.
        host_name = socket.gethostname()
    options = HostOptions(bucket=bucket, region=region, endpoint_url=endpoint_url,
                          host_name=host_name, retention=retention, profile=profile,
                          credentials_file=credentials_file, role_arn=role_arn,
                          create_user=create_user, backup_group=backup_group,
                          root=root.resolve() if root else None, enable=not no_enable,
                          force=force, cache_dir=cache_dir, state_file=state_file,
                          prometheus_textfile=prometheus_textfile,
                          recipients=tuple(_recipient(r) for r in recipients),
                          dedup_secret=read_dedup_secret_file(dedup_secret, strict=False)
                          if dedup_secret else None,
                          dedup_group=_dedup_group(dedup_group))
    result = write_config(options, create_key=_key_maker(bucket, region, endpoint_url,
                                                                legal_hold))
    for outcome in result.outcomes:
        click.echo(f"{outcome.action:11} {result.root / outcome.target.relative_to('/')}")
    if result.user:
        click.echo(f"IAM user {result.user}: new access key {result.access_key_id} "
                   "written to the credentials file")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if not recipients:
        click.echo("s3archive: warning: backups will NOT be encrypted (anyone who can read "
                   "the bucket reads them); recommended: s3archive key generate --out FILE, "
                   "keep FILE offline, then write-config --recipient age1...", err=True)
    for line in retention_plan(retention, utc_now()):
        click.echo(line)
    if result.enabled:
        click.echo("enabled: s3archive.timer")
    else:
        click.echo("to enable the daily timer, run:")
        for command in result.commands:
            click.echo("  " + " ".join(command))


def _dedup_group(text: str | None) -> str | None:
    from s3archive.config import DEFAULT_DEDUP_GROUP, dedup_group_of

    try:
        return dedup_group_of(text) if text is not None else DEFAULT_DEDUP_GROUP
    except ValueError as err:
        raise UsageError(f"--dedup-group {text!r}: {err}") from None


def _recipient(text: str) -> Recipient:
    from s3archive.crypto.errors import KeyFormatError

    try:
        return Recipient.parse(text)
    except KeyFormatError as err:
        raise UsageError(f"--recipient: {err}") from None


def _key_maker(bucket: str, region: str, endpoint_url: str | None,
               legal_hold: bool):  # type: ignore[no-untyped-def]
    def create_key(user: str, group: str, host: str):  # type: ignore[no-untyped-def]
        from s3archive.setup.clients import AdminClients
        from s3archive.setup.iam_setup import create_user_with_key

        clients = AdminClients(region=region, endpoint_url=endpoint_url)
        spec = BucketSpec(bucket=bucket, region=region,
                          endpoint_url=endpoint_url, legal_hold=legal_hold)
        return create_user_with_key(clients.service("iam"), spec, user, group, host,
                                    clients.account_id() or "")
    return create_key


COMMANDS = [create_resources_command, write_config_command]
