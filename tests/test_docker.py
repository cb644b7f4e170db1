"""The Dockerfiles, read without a Docker engine: what they copy exists and is not ignored, they install the package
the way the Makefile does, and their default command trains a config that exists into the mounted run folder."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
# pip options that only say where packages come from; the rest of the command must be the Makefile's.
INDEX_OPTIONS = ("--extra-index-url", "--index-url")


def test_both_images_exist():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_copied_files_exist_and_are_not_ignored(dockerfile):
    ignored = _dockerignore()
    copies = [args for name, args in _instructions(dockerfile) if name == "COPY"]
    assert copies

    for args in copies:
        sources = [word for word in shlex.split(args) if not word.startswith("--")][:-1]
        assert sources, args
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{dockerfile.name} copies {source!r}, which is not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".yaml", ".toml")]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                assert not ignored(relative), f"{dockerfile.name} copies {relative}, but .dockerignore excludes it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_pip_install_matches_the_makefile(dockerfile):
    makefile = (ROOT / "Makefile").read_text()
    (make_line,) = [line for line in makefile.splitlines() if " pip install " in line]
    expected = _after_install(shlex.split(make_line))

    instructions = _instructions(dockerfile)
    args = _arguments(instructions)
    runs = [(i, args_) for i, (name, args_) in enumerate(instructions) if name == "RUN" and "pip install" in args_]
    assert len(runs) == 1, f"{dockerfile.name} should install the package with one `pip install`"
    index, run = runs[0]
    words = shlex.split(_substitute(run.split("pip install", 1)[1], args))

    options, i = {}, 0
    while i < len(words) and words[i] in INDEX_OPTIONS:
        options[words[i]] = words[i + 1]
        i += 2
    assert words[i:] == expected  # `-e .[dev]`, as `make` installs it

    assert options == {}
    if dockerfile.name == "Dockerfile.cpu":  # a CPU build of torch can come from an index passed as a build arg
        assert ("ARG", "PIP_EXTRA_INDEX_URL") in instructions[:index]

    copied_before = " ".join(args_ for name, args_ in instructions[:index] if name == "COPY")
    for needed in ("pyproject.toml", "README.md", "agoplight/"):  # the build reads the readme for the metadata
        assert needed in copied_before, f"{dockerfile.name} installs before copying {needed}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_default_command_trains_an_existing_config_into_the_runs_volume(dockerfile):
    instructions = _instructions(dockerfile)
    (cmd,) = [json.loads(args) for name, args in instructions if name == "CMD"]
    assert cmd[:3] == ["python", "train.py", "fit"]
    config = cmd[cmd.index("--config") + 1]
    assert (ROOT / config).is_file()
    copied = " ".join(args for name, args in instructions if name == "COPY")
    assert "train.py" in copied and "configs/" in copied

    (workdir,) = [args for name, args in instructions if name == "WORKDIR"]
    volumes = [json.loads(args) for name, args in instructions if name == "VOLUME"]
    assert volumes == [["/workspace/runs", "/workspace/data"]]
    root_dir = yaml.safe_load((ROOT / config).read_text())["trainer"]["default_root_dir"]
    assert f"{workdir}/{root_dir}".startswith("/workspace/runs/")


def test_cuda_image_is_a_cuda_runtime_with_python_3_11():
    instructions = _instructions(ROOT / "docker" / "Dockerfile.cuda")
    (base,) = [args for name, args in instructions if name == "FROM"]
    image = _substitute(base, _arguments(instructions))
    assert image.startswith("nvidia/cuda:") and "-runtime-" in image
    assert any(name == "RUN" and "python3.11 -m venv" in args for name, args in instructions)


# ---- helpers ---------------------------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order: comments dropped, continuation lines joined."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in text.splitlines():
        if line.strip():
            name, _, args = line.strip().partition(" ")
            result.append((name.upper(), " ".join(args.split())))
    return result


def _arguments(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Default values of the ``ARG``s."""
    pairs = [args.partition("=") for name, args in instructions if name == "ARG"]
    return {key: value for key, _, value in pairs}


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), text)


def _after_install(words: list[str]) -> list[str]:
    return words[words.index("install") + 1 :]


def _dockerignore():
    """A test of whether ``.dockerignore`` excludes a path relative to the repository (or one of its folders)."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("!"), "exceptions are not understood by this test"
            regex = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
            patterns.append(re.compile(regex.replace(r"\?", "[^/]")))

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(pattern.fullmatch(prefix) for pattern in patterns for prefix in prefixes)

    return ignored
