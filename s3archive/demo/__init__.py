"""``s3archive demo``: the whole daily cycle against an embedded S3 endpoint.

A moto server on 127.0.0.1 stands in for S3 (moto is not faithful for
Object Lock: it shows the cycle, the RGW tests prove the locks).  Every step
is the real command, run in-process: ``create-resources``, ``key generate``
(the restore key, kept in the work directory), ``write-config --root
--recipient``, ``archive`` twice around a small change, ``runs``, ``verify
--read-data``, ``restore`` and ``restore-snapshot`` (the readers with
``--key``); then the restored tree and database are compared with the
originals.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3archive.demo import sample
from s3archive.demo.endpoint import kept_config, moto_endpoint, save_bucket
from s3archive.errors import S3ArchiveError
from s3archive.human import size as human_size

DEMO_HOST = "demo-host"
RESTORE_KEY_NAME = "restore.key"
DEMO_KEY = "AKIADEMO000000000001"
DEMO_SECRET = "s3archive-demo-secret-for-the-embedded-endpoint"
_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "S3ARCHIVE_CONFIG",
            "JOURNAL_STREAM", "S3ARCHIVE_RESTORE_DB", "S3ARCHIVE_KEY_FILE")


_PERIOD = {"weekly": "ISO week", "monthly": "month", "yearly": "calendar year"}


class DemoFailed(S3ArchiveError):
    """A step of the demo failed; the message names the step and its output."""


@dataclass
class DemoResult:
    ok: bool = False
    work_dir: str | None = None  # kept with --keep, else removed
    endpoint_url: str = ""
    bucket: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0
    explore: list[str] = field(default_factory=list)  # with --keep: commands to try next

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "work_dir": self.work_dir, "endpoint_url": self.endpoint_url,
                "bucket": self.bucket, "steps": self.steps, "notes": self.notes,
                "differences": self.differences, "seconds": round(self.seconds, 2),
                "explore": self.explore}


@dataclass
class _Invocation:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@contextlib.contextmanager
def _demo_environment(work: Path) -> Iterator[None]:
    """Credentials for the embedded endpoint only; the caller's AWS settings
    (profiles, keys, endpoints) must not leak in, and are put back after."""
    saved = {name: os.environ.get(name) for name in _AWS_ENV}
    for name in _AWS_ENV:
        os.environ.pop(name, None)
    os.environ.update(AWS_ACCESS_KEY_ID=DEMO_KEY, AWS_SECRET_ACCESS_KEY=DEMO_SECRET,
                      AWS_CONFIG_FILE=str(work / "no-aws-config"),
                      AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _invoke(args: list[str]) -> _Invocation:
    """One s3archive command, in-process, its output captured."""
    import click

    from s3archive.cli.main import cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(args=args, prog_name="s3archive", standalone_mode=False)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except click.ClickException as error:
            error.show(file=err)
            code = error.exit_code
        except click.Abort:
            code = 1
    return _Invocation(code, out.getvalue(), err.getvalue())


class Demo:
    def __init__(self, work: Path, say: Callable[[str], None]):
        self.work = work
        self.say = say
        self.result = DemoResult()
        self.config = work / "root" / "etc" / "s3archive" / "config.toml"
        self.key_file = work / RESTORE_KEY_NAME  # the operator's, never below the host's root

    # ------------------------------------------------------------ helpers
    def _step(self, name: str, args: list[str], ok_codes: tuple[int, ...] = (0,),
              with_config: bool = True) -> _Invocation:
        full = (["--config", str(self.config)] if with_config else []) + args
        done = _invoke(full)
        if done.exit_code not in ok_codes:
            detail = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise DemoFailed(f"demo step {name!r} (s3archive {' '.join(args)}) exited with "
                             f"{done.exit_code}: {detail}")
        return done

    def _record(self, step: str, **figures: Any) -> None:
        self.result.steps.append({"step": step, **figures})

    # ------------------------------------------------------------ the cycle
    def run(self, endpoint: str) -> DemoResult:
        r = self.result
        r.endpoint_url = endpoint
        r.bucket = f"s3archive-demo-{secrets.token_hex(4)}"  # unique: moto state outlives a run
        data = sample.make_sample(self.work / "sample")
        r.notes += data.notes
        self.say(f"sample data: {data.tree} (a hardlink, a symlink, "
                 f"{'an ACL' if data.acl else 'no ACL'}, {'an xattr' if data.xattr else 'no xattr'}, "
                 f"{human_size(sample.BLOB_BYTES)} of binary data) and a SQLite database "
                 f"{data.database}")
        for note in data.notes:
            self.say(f"  note: {note}")
        self._create_resources(endpoint)
        recipient = self._generate_key()
        self._write_config(endpoint, data, recipient)
        first = self._archive("archive (first run)")
        changes = sample.small_change(data)
        self.say("small change: " + "; ".join(changes))
        second = self._archive("archive (after the change)")
        self._check_incremental(first, second)
        self._runs()
        self._verify()
        restored = self._restore()
        self._compare(data, restored)
        self._restore_database(data)
        r.ok = not r.differences
        return r

    def _create_resources(self, endpoint: str) -> None:
        done = self._step("create-resources", [
            "create-resources", "--bucket", self.result.bucket, "--endpoint-url", endpoint,
            "--method", "s3-api", "--no-bucket-policy", "--no-iam", "--json"],
            with_config=False)
        check = done.json()["check"]
        differences = [d for d in check.get("differences", [])]
        self._record("create-resources", bucket=self.result.bucket, check=check)
        self.say(f"create-resources --method s3-api: bucket {self.result.bucket} with Object "
                 f"Lock, versioning and a default retention on {endpoint} (moto)"
                 + (f"; moto does not keep: {', '.join(d['setting'] for d in differences)} "
                    "(no bucket policy either: moto applies every Deny to every caller)"
                    if differences else ""))

    def _generate_key(self) -> str:
        done = self._step("key generate", ["key", "generate", "--out", str(self.key_file)],
                          with_config=False)
        recipient = done.stdout.strip()
        self._record("key generate", key_file=str(self.key_file), recipient=recipient)
        self.say(f"key generate --out {self.key_file}: the restore key (private, mode 0600; "
                 f"on a real setup it stays offline, with a paper copy from --paper); its "
                 f"recipient {recipient} is all the host gets")
        return recipient

    def _write_config(self, endpoint: str, data: sample.SampleData, recipient: str) -> None:
        root = self.work / "root"
        state = self.work / "state" / "last-run.json"
        done = self._step("write-config", [
            "write-config", "--bucket", self.result.bucket, "--endpoint-url", endpoint,
            "--host-name", DEMO_HOST, "--root", str(root), "--no-enable",
            "--credentials-file", "/etc/s3archive/credentials",
            "--cache-dir", str(self.work / "cache"), "--state-file", str(state),
            "--recipient", recipient],
            with_config=False)
        plan = done.stdout[done.stdout.index("retention plan"):].splitlines()
        plan = plan[:next((i for i, line in enumerate(plan) if not line.startswith(
            ("retention plan", "  "))), len(plan))]
        etc = self.config.parent
        creds = etc / "credentials"
        creds.write_text(f"[default]\naws_access_key_id = {DEMO_KEY}\n"
                         f"aws_secret_access_key = {DEMO_SECRET}\n")
        creds.chmod(0o600)
        sample.install_script(etc / "pickers.d" / "50-demo-data", sample.picker_script(data.tree))
        sample.install_script(etc / "snapshots.d" / "50-demo-sqlite",
                              sample.snapshotter_script(data.database))
        self._record("write-config", root=str(root), config=str(self.config),
                     retention_plan=plan, recipients=[recipient],
                     dedup_secret_file=str(etc / "dedup.key"))
        self.say(f"write-config --root {root} --recipient {recipient[:12]}...: config.toml "
                 "with [encryption] (the recipient and a new dedup secret, dedup.key, mode "
                 "0600), credentials, examples, systemd units; enabled the picker "
                 "pickers.d/50-demo-data and the snapshotter snapshots.d/50-demo-sqlite; it "
                 "prints the " + "\n  ".join(plan))

    def _archive(self, name: str) -> dict[str, Any]:
        summary = self._step(name, ["archive", "--json"]).json()
        requests = sum(summary["requests"].values())
        self._record(name, **{k: summary[k] for k in (
            "run_id", "tier", "retain_until", "files", "files_unchanged", "snapshots",
            "bytes_total", "bytes_read", "bytes_new", "bytes_uploaded", "packs_uploaded",
            "packs_extended", "exit_code")}, requests=requests, warnings=summary["warnings"])
        self.say(f"{name}: run {summary['run_id']}, {summary['files']} files "
                 f"({summary['files_unchanged']} unchanged, not re-read), "
                 f"{summary['snapshots']} snapshot; {human_size(summary['bytes_read'])} read, "
                 f"{human_size(summary['bytes_new'])} new, "
                 f"{human_size(summary['bytes_uploaded'])} uploaded in "
                 f"{summary['packs_uploaded']} pack(s); {requests} requests; "
                 f"tier {summary['tier']}, locked {self._mode()} until {summary['retain_until']}")
        if summary["tier"] != "daily":
            self.say(f"  the first run of a {_PERIOD[summary['tier']]} is promoted to the "
                     f"{summary['tier']} tier: on AWS this run would stay locked, and billed, "
                     f"until {summary['retain_until'][:10]} (here: the demo's own moto "
                     "endpoint)")
        for warning in summary["warnings"]:
            self.say(f"  warning: {warning}")
        return summary

    def _mode(self) -> str:
        import tomllib

        return tomllib.loads(self.config.read_text())["retention"]["mode"]

    def _check_incremental(self, first: dict[str, Any], second: dict[str, Any]) -> None:
        share = second["bytes_uploaded"] / max(first["bytes_uploaded"], 1)
        self.say(f"  the second run uploaded {share:.1%} of what the first did: only the "
                 "changed file, the new file, the new dump and the manifest")
        if second["files_unchanged"] < second["files"] - 2:
            self.result.differences.append(
                f"the second run re-read {second['files'] - second['files_unchanged']} files; "
                "expected only the changed and the new one")

    def _runs(self) -> None:
        runs = self._step("runs", ["runs", "--json"]).json()
        self._record("runs", runs=[{k: run[k] for k in ("run_id", "tier", "retain_until",
                                                       "lock_mode", "files", "status")}
                                   for run in runs])
        self.say(f"runs: {len(runs)} runs of {DEMO_HOST}: " + "; ".join(
            f"{run['run_id']} {run['tier']} {run['files']} files, locked until "
            f"{run['retain_until']}, {run['status']}" for run in runs))

    def _verify(self) -> None:
        report = self._step("verify", ["verify", "--all", "--read-data", "--json",
                                       "--key", str(self.key_file)], ok_codes=(0, 1)).json()
        for run in report["runs"]:
            self._record("verify", run_id=run.get("run_id"), ok=run.get("ok"),
                         packs=run.get("packs"), chunks_checked=run.get("chunks_checked"),
                         bytes_checked=run.get("bytes_checked"),
                         problems=run.get("problems", []))
            self.say(f"verify --read-data {run.get('run_id')}: "
                     + (f"ok, {run.get('packs')} packs present and locked, "
                        f"{run.get('chunks_checked')} chunks "
                        f"({human_size(run.get('bytes_checked') or 0)}) read and hashed"
                        if run.get("ok") else
                        f"PROBLEMS: {run.get('problems')}"))
        if not report["ok"]:
            self.result.differences.append("verify found problems")

    def _restore(self) -> Path:
        target = self.work / "restored"
        done = self._step("restore", ["restore", "latest", "--target", str(target), "--json",
                                      "--key", str(self.key_file)], ok_codes=(0, 1))
        report = done.json()
        self._record("restore", target=str(target), ok=report["ok"], entries=report["entries"],
                     files=report["files"], bytes=report["bytes"],
                     requests=sum(report["store"]["requests"].values()),
                     warnings=report["warnings"], failed=report["failed"],
                     damaged=report["damaged"])
        self.say(f"restore latest --target {target} --key {self.key_file.name}: "
                 f"{report['entries']} entries, "
                 f"{report['files']} files, {human_size(report['bytes'])}, "
                 f"{sum(report['store']['requests'].values())} requests")
        for problem in report["warnings"] + report["failed"] + report["damaged"]:
            self.say(f"  {problem}")
        if not report["ok"]:
            self.result.differences.append("restore reported damaged or failed entries")
        return target

    def _compare(self, data: sample.SampleData, target: Path) -> None:
        restored = target / str(data.tree).lstrip("/")
        count, differences = sample.compare_trees(data.tree, restored)
        self.result.differences += differences
        self._record("compare", entries=count, differences=differences)
        if differences:
            self.say(f"compare: {len(differences)} difference(s) between {data.tree} and "
                     f"{restored}:")
            for difference in differences:
                self.say(f"  {difference}")
        else:
            self.say(f"compare: {count} entries identical (type, mode, owner, mtime, content, "
                     "symlink target, hardlinks, xattrs, ACLs)")

    def _restore_database(self, data: sample.SampleData) -> None:
        target = self.work / "restored-db" / "app.sqlite3"
        target.parent.mkdir()
        os.environ["S3ARCHIVE_RESTORE_DB"] = str(target)
        try:
            self._step("restore-snapshot", ["restore-snapshot", "latest", "50-demo-sqlite",
                                            "--yes", "--key", str(self.key_file)])
        finally:
            os.environ.pop("S3ARCHIVE_RESTORE_DB", None)
        same = sample.database_dump(target) == sample.database_dump(data.database)
        self._record("restore-snapshot", target=str(target), identical=same)
        if same:
            self.say(f"restore-snapshot latest 50-demo-sqlite: the recorded restore command "
                     f"loaded the dump into {target}; its contents equal the live database")
        else:
            self.result.differences.append("the restored database differs from the original")
            self.say("restore-snapshot: the restored database DIFFERS from the original")


def run_demo(keep: Path | None, say: Callable[[str], None]) -> DemoResult:
    """Run the cycle; remove everything afterwards unless ``keep``."""
    began = time.monotonic()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            from s3archive.errors import UsageError
            raise UsageError(f"--keep {keep}: the directory must be empty or missing")
        work = keep.resolve()
        work.chmod(0o700)  # credentials, and the endpoint's saved state that --serve loads
    else:
        work = Path(tempfile.mkdtemp(prefix="s3archive-demo-"))
    demo = Demo(work, say)
    try:
        with _demo_environment(work), moto_endpoint() as endpoint:
            say(f"embedded S3 endpoint (moto) on {endpoint}; working in {work}")
            result = demo.run(endpoint)
            if keep is not None:
                save_bucket(work, result.bucket)
    finally:
        demo.result.seconds = time.monotonic() - began
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if keep is not None:
        result.work_dir = str(work)
        result.explore = explore_commands(work, result.steps)
    return result


def explore_commands(work: Path, steps: list[dict[str, Any]]) -> list[str]:
    """What to type after ``demo --keep DIR``: the endpoint back, then a look."""
    config = f"s3archive --config {kept_config(work)}"
    first = next((s["run_id"] for s in steps if s["step"] == "archive (first run)"), "RUN")
    key = f"--key {work}/{RESTORE_KEY_NAME}"  # the runs are encrypted: reading needs the key
    return [f"s3archive demo --serve {work}",
            f"{config} runs",
            f"{config} ls latest {work}/sample/data {key}",
            f"{config} find '*.md' {key}",
            f"{config} diff {first} latest {key}",
            f"{config} restore latest {work}/sample/data/docs --target {work}/explore {key}"]
