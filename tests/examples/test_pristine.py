"""tests/example.py: the tests read the example as committed, never the working copy a user
edited (issue 24), and every test reads it through that one helper."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests import example

SHIPPED = "weight: 90"
EDITED = "weight: 50"


def _repo_with_an_edited_example(tmp_path: Path) -> Path:
    """A git repository holding the example as committed, then edited in the working copy
    the way `meshctl route set-weight orders v1=50 v2=50` does."""
    repo = tmp_path / "repo"
    for part in (*example.CONFIG_PARTS, "apps"):
        src, dst = example.COMPOSE / part, repo / example.IN_REPO / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the example"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, timeout=30)
    orders = repo / example.IN_REPO / "mesh" / "orders.yaml"
    assert orders.read_text().count(SHIPPED) == 1
    orders.write_text(orders.read_text().replace(SHIPPED, EDITED))
    return repo


def test_the_copy_is_the_committed_example_not_the_edited_working_copy(tmp_path: Path) -> None:
    repo = _repo_with_an_edited_example(tmp_path)
    source = example.build(tmp_path / "copy", repo)
    assert source.startswith("git HEAD (")
    orders = (tmp_path / "copy" / "mesh" / "orders.yaml").read_text()
    assert SHIPPED in orders and EDITED not in orders
    assert (tmp_path / "copy" / "docker-compose.yml").is_file()
    assert (tmp_path / "copy" / "apps" / "shop.py").is_file()  # code: the working tree's


def test_without_git_history_the_working_copy_is_used_and_said(tmp_path: Path) -> None:
    repo = _repo_with_an_edited_example(tmp_path)
    shutil.rmtree(repo / ".git")  # a tarball of the project
    source = example.build(tmp_path / "copy", repo)
    assert source.startswith(f"the working copy {repo / example.IN_REPO}"), source
    assert "not a git repository" in source and "assume it is unedited" in source
    assert EDITED in (tmp_path / "copy" / "mesh" / "orders.yaml").read_text()


def test_the_shared_copy_is_what_head_says() -> None:
    committed = subprocess.run(
        ["git", "-C", str(example.REPO), "show", "HEAD:examples/compose/mesh/orders.yaml"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert (example.CONFIG / "orders.yaml").read_text() == committed
    assert example.fingerprint() == example.SHIPPED


# Reading the clone a test made is not reading the user's working copy.
ALLOWED = {"tests/example.py", "tests/examples/test_walkthrough.py"}
DIRECT = re.compile(r"""["']examples["']\s*/|["']examples/compose""")


def test_every_test_reads_the_example_through_tests_example() -> None:
    offenders = []
    for path in sorted((example.REPO / "tests").rglob("*.py")):
        rel = path.relative_to(example.REPO).as_posix()
        if rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if DIRECT.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, (
        "these read examples/ in the working copy, which the walkthrough edits: use "
        "tests.example (CONFIG, COMPOSE, copy_config, copy_example) instead\n"
        + "\n".join(offenders))  # fmt: skip
