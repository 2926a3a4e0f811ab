"""deploy/Dockerfile: what the image needs, read from the Dockerfile itself.

There is no Docker engine here, so the file is parsed (dockerfile-parse) and
its stages checked: wheels built in a builder, a slim final stage without
build tools, a numeric non-root user, the entrypoint and the config path.
The builder's own build step is then replayed on exactly the files it copies.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|libpq-dev|python3?-dev|"
                         r"pip wheel|apt-get|apk|git)\b")


def stages() -> list[list[dict]]:
    """The Dockerfile's instructions, split at each FROM, with ARGs substituted."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    out: list[list[dict]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def args() -> dict[str, str]:
    """The global ARGs (declared before the first FROM), usable in every FROM line."""
    out = {}
    for ins in DockerfileParser(path=str(DOCKERFILE)).structure:
        if ins["instruction"] == "FROM":
            break
        if ins["instruction"] == "ARG":
            name, _, default = ins["value"].partition("=")
            out[name] = default
    return out


def instructions(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_two_stages_from_a_slim_python_image():
    builder, final = stages()
    base = args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base)
    assert instructions(builder, "FROM") == ["${PYTHON_IMAGE} AS builder"]
    assert instructions(final, "FROM")[0].startswith("${PYTHON_IMAGE}")
    # the builder makes the wheels; the final stage only copies the installed environment
    assert any("pip wheel" in r for r in instructions(builder, "RUN"))
    assert instructions(final, "COPY") == ["--from=builder /opt/retention /opt/retention"]


def test_no_build_tools_or_package_manager_runs_in_the_final_image():
    final = stages()[-1]
    for run in instructions(final, "RUN"):
        assert not BUILD_TOOLS.search(run), run
        assert "pip" not in run, run


def test_runs_as_a_numeric_non_root_user():
    final = stages()[-1]
    users = instructions(final, "USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    # the user exists in the image, with that uid
    assert any(f"--uid {uid}" in r for r in instructions(final, "RUN"))
    # and USER is set after the last RUN (nothing later runs as root)
    kinds = [i["instruction"] for i in final]
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")


def test_entrypoint_cmd_and_config_path():
    final = stages()[-1]
    assert [json.loads(v) for v in instructions(final, "ENTRYPOINT")] == [["retention"]]
    cmd = [json.loads(v) for v in instructions(final, "CMD")]
    assert cmd == [["plan"]]        # the image alone never enforces: a run is asked for explicitly
    env = DockerfileParser(path=str(DOCKERFILE)).envs
    assert env["RETENTION_CONFIG"] == "/etc/retention/policies.toml"
    assert env["PATH"].startswith("/opt/retention/bin:")
    # a working directory the user cannot write: a relative SQLite state file cannot be created there
    assert instructions(final, "WORKDIR") == ["/opt/retention"]


def test_the_build_context_sends_only_what_the_builder_copies():
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"
    copied = set()
    for value in instructions(stages()[0], "COPY"):
        copied.update(value.split()[:-1])
    allowed = {line.lstrip("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed
    assert all((ROOT / path).exists() for path in copied)


@pytest.mark.slow
def test_the_builder_step_builds_the_project_wheel_from_the_copied_files(tmp_path):
    """The files the builder copies are enough to build the wheel (no source file forgotten)."""
    ctx = tmp_path / "src"
    ctx.mkdir()
    for value in instructions(stages()[0], "COPY"):
        *sources, dest = value.split()
        for src in sources:
            target = ctx / dest if not dest.endswith("/") and dest != "./" else ctx / Path(src).name
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / src, target)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--wheel-dir", str(tmp_path / "wheels"), str(ctx)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "wheels").glob("retention-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert "retention/cli.py" in names and "retention/metrics.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "retention = retention.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
