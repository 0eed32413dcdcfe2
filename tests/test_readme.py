"""Every command in README.md and examples/README.md runs as written, so the README cannot drift.

Each command is run in order, in a scratch copy of the repository layout (its examples, configs, tools and the
demo bundle; ../shared beside it), with at most a few appended options that make a long command short while
still exercising it (``QUICK``). A command that cannot run here names its reason in ``NOT_RUN``; a command of the
README that neither table knows fails the test, and so does an entry that the README no longer has.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "examples" / "README.md"]

NOT_RUN = {
    'pip install torch==2.13.0 && pip install -e ".[train,dev,serve,ray,gallery,openvino]"': "the setup itself: .ci/run runs it",
    "python -m pytest -q": "this test suite",
    'pip install ".[test]" && python -m pytest -q tests/runtime':
        ".ci/run runs it in a new environment without torch (its runtime tests are part of this suite)",
    "pip install . ./packaging/bfm-demo-bundle": "tests/test_install.py installs both into a new environment",
    "cd /tmp && bfm-verify photo1.jpg photo2.jpg": "placeholders; tests/test_install.py runs bfm-verify from outside the repo",
    "torchrun --nproc_per_node 4 -m bfm_train.train.cli --config configs/paper_r50_casia.yaml":
        "CASIA-WebFace is not here; tests/train/test_trainer.py runs torchrun with two ranks",
    "bfm-build-engine engines/demo --opt-batch 32 --max-batch 256 --timing-cache ~/.cache/bfm/timing.cache":
        "needs TensorRT and a GPU (benchmarks/gpu_check/run.sh)",
    "bash benchmarks/gpu_check/run.sh --device cpu":
        "the GPU check's dry run: tests/test_gpu_check.py runs it (and the check's no-GPU exit)",
    "bfm-real-masks work_dirs/face-mask-detection work_dirs/real_masks":
        "needs the 162 MB copy of Face-Mask-Detection: tests/runtime/test_real_masks.py builds the committed sample",
    'pip install -e ".[openvino]"': "an extra's install; the setup line above installs it with the others",
    "bfm-serve --port 8000": "a server that runs until stopped: tests/runtime/test_serve.py starts it on a free port",
    "curl -F a=@examples/zakayev_1.jpg -F b=@examples/zakayev_3_masked.jpg http://127.0.0.1:8000/v1/verify":
        "talks to that server: tests/runtime/test_serve.py sends the same multipart request",
    "bfm-serve --ray --replicas 2 --port 8000": "runs until stopped: tests/runtime/test_serve.py starts it with two replicas",
    "serve run bfm_deploy.serve.ray_app:build_app replicas=2 bundle=engines/demo":
        "Ray's CLI for the same application as bfm-serve --ray, which tests/runtime/test_serve.py runs",
    "bash benchmarks/explain/run.sh": "trains Baseline 2 and the E_P variants (hours on 2 cores); "
        "tests/runtime/test_explain.py runs its tools' parts on MFR2 faces",
    "bfm-gallery calibrate people --fpir 0.01": "the LFW folds 1-5 protocol (minutes on 2 cores); tests/runtime/test_gallery.py "
        "calibrates from a report",
}
# Appended to every command of a tool: the smallest run that still goes through the whole command.
QUICK = {
    "bfm-mask": ["--limit", "150", "--quiet"],
    "bfm-train": ["--max-steps", "1", "--set", "batch_size=8", "--set", "data.workers=0", "--set", "val.pairs=null"],
    "bfm-eval": ["--pairs-per-fold", "4"],
    "bfm-bench --latency": ["--runs", "1", "--batches", "1", "--pair-count", "2", "--raw-pair-count", "1"],
    "bfm-bench --gallery-scale": ["--sizes", "1000", "--queries", "10"],
}
DECISION_TOOLS = ("bfm-verify", "bfm-gallery")  # exit 1 is an answer ("different people", "unknown"), not a failure


# Docs whose relative links must lead to a file (and to a heading of it, where they name one): the guide, the
# results beside it and the other pages of this test's owners.
LINKED_DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "engines" / "README.md",
               REPO / "examples" / "README.md", *sorted((REPO / "benchmarks" / "results").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``doc``: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)  # a shell comment is no heading
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken_links(doc: Path) -> list[str]:
    """The relative markdown links of ``doc`` that name no existing file or folder, or no heading of the page."""
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a URL
            continue
        path, _, anchor = target.partition("#")
        linked = doc.parent / path if path else doc
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked)):
            broken.append(target)
    return broken


def readme_commands() -> list[str]:
    """The shell commands of the docs' indented code blocks, continuation lines joined, comments dropped."""
    commands = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("    ") and not line.startswith("     "):
                text = line[4:]
                while text.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
                text = re.sub(r"\s+#.*$", "", text).strip()  # a trailing comment (none of ours holds a quoted #)
                if re.match(r"(bfm-|python |pip |torchrun |cd |bash |curl |serve )", text):
                    commands.append(text)
            i += 1
    return commands


def readme_python() -> list[str]:
    """The docs' ```python blocks."""
    return [m.group(1) for doc in DOCS for m in re.finditer(r"```python\n(.*?)```", doc.read_text(), re.S)]


def _quick(command: str) -> list[str]:
    for prefix in sorted(QUICK, key=len, reverse=True):
        if command.startswith(prefix):
            return QUICK[prefix]
    return []


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The repository's layout without its work_dirs: what the README's commands read, linked; what they write, fresh."""
    root = tmp_path_factory.mktemp("readme")
    repo = root / "repo"
    (repo / "engines").mkdir(parents=True)
    for name in ("examples", "configs", "tools"):
        (repo / name).symlink_to(REPO / name)
    (repo / "engines" / "demo").symlink_to(REPO / "engines" / "demo")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(data_dir)
    return repo


def test_every_command_is_run_or_says_why_not() -> None:
    commands = readme_commands()
    assert len(commands) >= 15
    unknown_not_run = set(NOT_RUN) - set(commands)
    assert not unknown_not_run, f"NOT_RUN lists commands the docs no longer have: {unknown_not_run}"
    assert all(c.split()[0] in ("bfm-mask", "bfm-train", "bfm-export", "bfm-verify", "bfm-eval", "bfm-bench", "bfm-gallery",
                                "bfm-explain")
               for c in commands if c not in NOT_RUN), "a new kind of command: run it below or say why not"


def test_relative_links_lead_to_files() -> None:
    assert len(LINKED_DOCS) >= 5
    broken = {str(doc.relative_to(REPO)): links for doc in LINKED_DOCS if (links := broken_links(doc))}
    assert not broken, f"links to missing files: {broken}"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading: `with_code.json`, too\n\n```\n# not a heading\n```\n")
    doc = tmp_path / "doc.md"
    doc.write_text("## Top\n[ok](there.md) [anchor](there.md#a-heading-with_codejson-too) [web](https://example.org/x) "
                   "[top](#top) [gone](missing.md) [no heading](there.md#nowhere) [code](there.md#not-a-heading) "
                   "[not here](#bottom)")
    assert broken_links(doc) == ["missing.md", "there.md#nowhere", "there.md#not-a-heading", "#bottom"]


@pytest.mark.slow
def test_readme_commands_run_as_written(sandbox: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BFM_BUNDLE", "BFM_DATA")}
    for command in readme_commands():
        if command in NOT_RUN:
            continue
        line = command + "".join(" " + shlex.quote(a) for a in _quick(command))
        result = subprocess.run(["bash", "-c", line], cwd=sandbox, env=env, capture_output=True, text=True, timeout=600)
        allowed = (0, 1) if command.split()[0] in DECISION_TOOLS else (0,)
        assert result.returncode in allowed, f"{line}\n-> exit {result.returncode}\n{result.stderr[-1500:]}"


def test_readme_python_runs_as_written(sandbox: Path) -> None:
    blocks = readme_python()
    assert blocks
    for code in blocks:
        result = subprocess.run(["python", "-c", code], cwd=sandbox, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{code}\n-> {result.stderr[-1500:]}"
