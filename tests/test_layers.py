"""Data flows one way: no module imports a stage above its own.

Stages, lowest first (a module may import its own stage and any below):
basics (errors, clock, human, storage_classes) → config, format, progress, crypto → store →
repo → archive | restore (siblings: neither imports the other) → operations
(verify, prune, hold, browse, status, cost, export, find, mount, fleet) → setup → demo → cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import s3archive

PACKAGE = Path(s3archive.__file__).parent

STAGES: dict[str, int] = {
    "s3archive": 0, "s3archive.errors": 0, "s3archive.clock": 0, "s3archive.human": 0,
    "s3archive.storage_classes": 0,
    "s3archive.config": 1, "s3archive.format": 1, "s3archive.progress": 1,
    "s3archive.crypto": 1, "s3archive.stats": 1,
    "s3archive.store": 2,
    "s3archive.repo": 3,
    "s3archive.archive": 4, "s3archive.restore": 4,
    "s3archive.verify": 5, "s3archive.prune": 5, "s3archive.hold": 5,
    "s3archive.browse": 5, "s3archive.status": 5, "s3archive.cost": 5,
    "s3archive.export": 5, "s3archive.find": 5, "s3archive.mount": 5, "s3archive.fleet": 5,
    "s3archive.setup": 6, "s3archive.demo": 7, "s3archive.cli": 8, "s3archive.__main__": 9,
}

# The one named exception: the demo narrates the real commands, so it drives the CLI.
ALLOWED = {("s3archive.demo", "s3archive.cli.main")}


def stage_of(module: str) -> tuple[str, int]:
    matches = [p for p in STAGES if module == p or module.startswith(p + ".")]
    assert matches, f"{module} belongs to no stage: add it to STAGES"
    best = max(matches, key=len)
    return best, STAGES[best]


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s3archive"):
            if node.module == "s3archive":
                found.update(f"s3archive.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("s3archive"))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_points_up_the_pipeline() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        my_stage, my_rank = stage_of(me)
        for other in sorted(imports_of(path)):
            if other == "s3archive.__version__":
                continue
            their_stage, their_rank = stage_of(other)
            sibling = my_rank == their_rank == 4 and my_stage != their_stage
            if (their_rank > my_rank or sibling) and (me, other) not in ALLOWED:
                upward.append(f"{me} imports {other}")
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("from s3archive.cli.main import cli\n")
    assert imports_of(module) == {"s3archive.cli.main"}
    assert stage_of("s3archive.cli.main")[1] > stage_of("s3archive.format.model")[1]
