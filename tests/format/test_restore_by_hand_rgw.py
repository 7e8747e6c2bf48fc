"""docs/FORMAT.md section 9, "Restoring by hand", run as written against RGW.

The shell functions (``s3restore.sh`` for format 1, ``s3restore2.sh`` for
format 2) are taken from the document itself and driven with the AWS CLI,
zstd, jq and coreutils, exactly as the worked example shows: list the runs,
fetch one run object version, follow it to one file (format 2: one node per
level), restore that file, a snapshot and the whole run, then compare with
the source (content, modes, owners, ACLs, xattrs, links, holes).

The format-2 tree is small but has every shape a reader must follow: nested
directories, a directory split into several leaves under inner nodes, a file
whose chunks are in several chunk lists (the cut constants of
``format.tree_codec`` are lowered for the run, as the real ones need
thousands of files), a symlink, a hardlink, a sparse file and a name that is
not UTF-8.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3archive.archive.archiver import Archiver
from s3archive.config import load_config
from s3archive.format import tree_codec
from s3archive.repo.catalog import list_runs, open_tree, peek_format
from s3archive.store.factory import open_store
from support.archive_env import ArchiveEnv
from support.manifest_builder import tree_differences

# The AWS CLI when it is installed, else a stand-in for the two calls the example makes
# (CI installs no AWS CLI): the doc's scripts take the command from $AWS either way.
AWS_CLI = shutil.which("aws")
SHIM = Path(__file__).with_name("aws_s3api_shim.py")
DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
TOOLS = ("zstd", "jq", "dd", "sha256sum", "base64", "od", "setfacl", "setfattr",
         "rsync", "getfacl", "getfattr")

pytestmark = [
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason=f"needs {', '.join(TOOLS)} on PATH"),
    pytest.mark.skipif(os.geteuid() != 0, reason="restore_run sets owners and devices: root"),
    # bash, jq and one AWS CLI process per GET: ~25 s (format 2) and ~10 s (format 1) of CPU
    pytest.mark.slow,
]


def script(name: str) -> str:
    """The ```bash block of docs/FORMAT.md that starts with ``# NAME --``."""
    found = re.findall(r"```bash\n(# " + re.escape(name) + r" --.*?)```", DOC.read_text(),
                       re.DOTALL)
    assert len(found) == 1, f"docs/FORMAT.md holds no single {name} block"
    return found[0]


def make_tree(src: Path) -> None:
    rng = random.Random(10)
    data = src / "data"
    (data / "a" / "b" / "c").mkdir(parents=True)
    (data / "a" / "b" / "c" / "deep.txt").write_text("three levels down\n")
    (data / "a" / "link").symlink_to("b/c/deep.txt")
    (data / "big.bin").write_bytes(rng.randbytes(1 << 20) + b"compressible " * 40_000)
    os.link(data / "big.bin", data / "hardlink-to-big.bin")
    many = data / "many"
    many.mkdir()
    for i in range(6):  # names split the directory; empty files cost no GET by hand
        (many / f"f{i:03d}.txt").write_bytes(b"")
    (many / "f003.txt").write_text("file 3\n")
    (data / os.fsdecode(b"caf\xe9-latin1.txt")).write_bytes(b"latin-1 name\n")
    with open(data / "sparse.img", "wb") as handle:
        handle.write(rng.randbytes(300_000))
        handle.seek(8 << 20)
        handle.write(rng.randbytes(200_000))
        handle.truncate(10 << 20)
    (data / "empty-dir").mkdir()
    os.mkfifo(data / "fifo")
    os.chmod(data / "a", 0o750)
    subprocess.run(["setfacl", "-m", "u:1234:rw-", str(data / "a" / "b" / "c" / "deep.txt")],
                   check=True)
    subprocess.run(["setfattr", "-n", "user.note", "-v", "by hand", str(many / "f003.txt")],
                   check=True)


def shell(env: ArchiveEnv, work: Path, commands: str) -> str:
    """``commands`` in bash with both documented scripts sourced, as section 9 sets up."""
    (work / "s3restore.sh").write_text(script("s3restore.sh"))
    (work / "s3restore2.sh").write_text(script("s3restore2.sh"))
    environ = {"PATH": os.environ["PATH"], "HOME": str(work), "LC_ALL": "C.UTF-8",
               "BUCKET": env.bucket, "PREFIX": "",
               "AWS": (f"{AWS_CLI or shlex.quote(sys.executable) + ' ' + str(SHIM)} s3api "
                       f"--endpoint-url {env.endpoint_url}"),
               "AWS_ACCESS_KEY_ID": env.access_key, "AWS_SECRET_ACCESS_KEY": env.secret_key,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
               "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "TMPDIR": str(work)}
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n. ./s3restore.sh\n"
                           ". ./s3restore2.sh\n" + commands],
                          cwd=work, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def same_tree(src: Path, restored: Path) -> None:
    differences = tree_differences(src, restored)
    assert differences == {"rsync": "", "getfacl": "", "getfattr": ""}, differences
    assert os.stat(restored / "data" / "sparse.img").st_blocks * 512 < 2 << 20, "holes kept"
    assert os.stat(restored / "data" / "hardlink-to-big.bin").st_ino == \
        os.stat(restored / "data" / "big.bin").st_ino


@pytest.fixture
def env(rgw, tmp_path: Path) -> Iterator[ArchiveEnv]:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    # a shallow source: by hand, every directory above it costs one GET per lookup
    env.src = Path(tempfile.mkdtemp(prefix="s3a-by-hand-", dir="/tmp"))
    try:
        make_tree(env.src)
        env.pick(env.src)
        env.snapshotter("20-dump", f"printf 'a dump\\n' >&\"$1\"\n"
                        f"echo '::restore-through:: cat > {tmp_path}/restored-dump.txt'\n")
        yield env
    finally:
        shutil.rmtree(env.src)


def test_format_2_worked_example_restores_a_run_by_hand(env: ArchiveEnv, tmp_path: Path,
                                                        monkeypatch) -> None:
    # cuts that split 6 names into several leaves and a 2-chunk file into chunk lists
    monkeypatch.setattr(tree_codec, "LEAF_MIN", 2)
    monkeypatch.setattr(tree_codec, "LEAF_CUT", 1 << 31)
    monkeypatch.setattr(tree_codec, "INLINE_CHUNKS", 1)
    monkeypatch.setattr(tree_codec, "LIST_MIN", 1)
    monkeypatch.setattr(tree_codec, "LIST_MAX", 1)
    assert env.archive()["exit_code"] == 0
    store = open_store(load_config(env.config))
    (run,) = list_runs(store)
    assert peek_format(store.get(run.key, run.version_id), run.key) == 2
    tree = open_tree(store, run)
    many = tree.lookup(os.fsencode(env.src / "data" / "many"))
    node = tree._node(many.tree, many.entry.path)
    assert node.height >= 1 and len(node.children) >= 2, "the example must cross an inner node"
    big = tree.lookup(os.fsencode(env.src / "data" / "big.bin"))
    assert big is not None and big.lists is not None and len(big.lists) >= 2

    work = tmp_path / "work"
    work.mkdir()
    src = str(env.src)
    out = shell(env, work, f"""
$AWS list-object-versions --bucket "$BUCKET" --prefix "${{PREFIX}}runs/" \\
    --query 'Versions[].[Key, VersionId, LastModified, Size]' --output text | sort > runs.txt
KEY="${{PREFIX}}{run.key}"
VID=$($AWS list-object-versions --bucket "$BUCKET" --prefix "$KEY" \\
    --query "Versions[?Key=='$KEY'] | [0].VersionId" --output text)
$AWS get-object --bucket "$BUCKET" --key "$KEY" --version-id="$VID" root.jsonl.zst >/dev/null
zstdcat root.jsonl.zst | sed -n 1p | jq -e '.type == "header" and .format == 2'
zstdcat root.jsonl.zst | tail -n 1 | jq -e '.type == "trailer"'
mkdir run && open_run root.jsonl.zst run
jq -c '.root | {{kind, mode, tree}}' run/record.json
mkdir one && find_entry root.jsonl.zst {src}/data/many/f003.txt one
restore_file one/entry.json one/table.jsonl f003.txt && cmp f003.txt {src}/data/many/f003.txt
jq -c '{{node, packs, names: [.entries[] | .name]}}' one/node.json
jq -c '.snapshots[] | select(.name == "20-dump")' run/record.json > snap.json
fetch_chunks run/record.packs < snap.json | sh -c "$(jq -r .restore_through snap.json)"
flatten_run root.jsonl.zst run.jsonl.zst
restore_run run.jsonl.zst {tmp_path}/restore
echo done
""")
    assert out.rstrip().endswith("done")
    assert (work / "runs.txt").read_text().startswith(run.key + "\t")
    assert (tmp_path / "restored-dump.txt").read_text() == "a dump\n"
    assert '"node":"leaf"' in out
    same_tree(env.src, tmp_path / "restore" / src.lstrip("/"))


def test_format_1_worked_example_restores_a_run_by_hand(env: ArchiveEnv, tmp_path: Path) -> None:
    config = load_config(env.config)
    store = open_store(config)
    assert Archiver(config, store, storage_format=1).run().exit_code == 0
    (run,) = list_runs(store)
    assert peek_format(store.get(run.key, run.version_id), run.key) == 1
    work = tmp_path / "work"
    work.mkdir()
    src = str(env.src)
    out = shell(env, work, f"""
KEY="${{PREFIX}}{run.key}"
VID=$($AWS list-object-versions --bucket "$BUCKET" --prefix "$KEY" \\
    --query "Versions[?Key=='$KEY'] | [0].VersionId" --output text)
$AWS get-object --bucket "$BUCKET" --key "$KEY" --version-id="$VID" manifest.jsonl.zst >/dev/null
zstdcat manifest.jsonl.zst | sed -n 1p | jq -e '.type == "header" and .format == 1'
zstdcat manifest.jsonl.zst | tail -n 1 | jq -e '.type == "trailer"'
zstdcat manifest.jsonl.zst | jq -c 'select(.type == "pack")' > packs.jsonl
zstdcat manifest.jsonl.zst | jq -c --arg p {src}/data/big.bin \\
    'select(.type == "entry" and .path == $p)' > entry.json
restore_file entry.json packs.jsonl big.bin && cmp big.bin {src}/data/big.bin
B64=$(printf '{src}/data/caf\\xe9-latin1.txt' | base64 -w0)
zstdcat manifest.jsonl.zst | jq -c --arg b "$B64" \\
    'select(.type == "entry" and .path_b64 == $b)' > entry2.json
restore_file entry2.json packs.jsonl latin1.txt
zstdcat manifest.jsonl.zst | jq -c 'select(.type == "entry" and .path == "{src}/data/sparse.img")' \\
    > sparse.json
restore_file sparse.json packs.jsonl sparse.img && cmp sparse.img {src}/data/sparse.img
zstdcat manifest.jsonl.zst | jq -c 'select(.type == "snapshot" and .name == "20-dump")' > snap.json
fetch_chunks packs.jsonl < snap.json | sh -c "$(jq -r .restore_through snap.json)"
restore_run manifest.jsonl.zst {tmp_path}/restore
echo done
""")
    assert out.rstrip().endswith("done")
    assert (work / "latin1.txt").read_bytes() == b"latin-1 name\n"
    assert os.stat(work / "sparse.img").st_blocks * 512 < 2 << 20
    assert (tmp_path / "restored-dump.txt").read_text() == "a dump\n"
    same_tree(env.src, tmp_path / "restore" / src.lstrip("/"))
