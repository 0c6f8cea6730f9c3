"""The docs point at what exists: every relative link (and its anchor) in the READMEs and guides,
and every repository path they, the manifests' comments and the Dockerfile name. (A path that
moved, as ``jobs/rebalance.yaml`` once did, fails here.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from synctalk_build import paths

ROOT = paths.ROOT
# generated, never committed (.gitignore): named by the docs as where things are written
GENERATED = ("build/", "out/", "avatars/", ".venv/", "dist/", "deploy/kubernetes/secrets/")
# and the GPU runs' results (benchmarks.gpu_check, benchmarks.gpu_stage_benchmark write them on a GPU host)
GENERATED += ("benchmarks/results/gpu_check.json", "benchmarks/results/gpu_stages.json")
# a model's version folder (``1/model.py``), named for any model
TOP = sorted(
    p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and f"{p.name}/" not in GENERATED
)
MARKDOWN = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("*/README.md"), *ROOT.glob("docs/*.md")])
MANIFESTS = sorted([*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("deploy/*.yml"), ROOT / "deploy" / "Dockerfile"])
MANIFESTS += [ROOT / "deploy" / "entrypoint.sh", ROOT / "Makefile", ROOT / "pyproject.toml"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a path from the repository's root (a top folder's name first), or a file's path with an extension
# of the project's files (from the root, or from the naming file's folder)
PATH = re.compile(r"(?<![\w./<$-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./-]*[\w/])")
FILE = re.compile(r"(?<![\w./<$-])((?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|yml|sh|c|toml|txt|json|pbtxt|js|html|css))\b")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.strip().lstrip("#").strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("markdown", MARKDOWN, ids=relative)
def test_every_relative_link_and_anchor_exists(markdown):
    broken = []
    for target in LINK.findall(markdown.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (markdown.parent / file).resolve() if file else markdown
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {relative(linked)}")
    assert not broken, f"{relative(markdown)}: " + "; ".join(broken)


def named_paths(text: str) -> set[str]:
    return set(PATH.findall(text)) | set(FILE.findall(text))


@pytest.mark.parametrize("named_in", MARKDOWN + MANIFESTS, ids=relative)
def test_every_repository_path_named_exists(named_in):
    text = named_in.read_text()
    if named_in.suffix != ".md":  # the manifests' comments
        text = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    missing = sorted(
        name
        for name in named_paths(text)
        if not name.startswith(GENERATED + ("1/",))
        and not (ROOT / name).exists()
        and not (named_in.parent / name).exists()
    )
    assert not missing, f"{relative(named_in)} names paths that do not exist: {missing}"


def test_the_checks_can_fail(tmp_path):
    assert named_paths("(jobs/rebalance.yaml, deploy/kubernetes/rebalance.yaml)") == {
        "jobs/rebalance.yaml",
        "deploy/kubernetes/rebalance.yaml",
    }
    kubernetes = ROOT / "deploy" / "kubernetes"
    assert not (kubernetes / "jobs" / "rebalance.yaml").exists() and (kubernetes / "rebalance.yaml").exists()
    assert slug("## Avatars on replicas: placement") == "avatars-on-replicas-placement"
