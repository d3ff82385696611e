"""The Dockerfile and .dockerignore (issue 6, item 4), checked by parsing: no Docker engine here.

Each test names the property it protects; the Dockerfile is parsed with the `dockerfile`
package, which wraps BuildKit's own parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import dockerfile
import pytest

from tests.support import ROOT

CONFIG_PATH = "/etc/jobrunner/jobrunner.toml"
INSTALL = "pip install --no-cache-dir ."


def stages(path: Path = ROOT / "Dockerfile") -> list[list[dockerfile.Command]]:
    """The instructions of each build stage, in order (the last stage is the image)."""
    result: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            result.append([])
        if not result:  # only a global ARG may come before the first FROM
            assert command.cmd == "ARG", f"{command.original!r} comes before the first FROM"
            continue
        result[-1].append(command)
    return result


def only(stage: Sequence[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = [c for c in stage if c.cmd == cmd]
    assert len(found) == 1, f"expected one {cmd} in the final stage, got {len(found)}"
    return found[0]


def env_of(stage: Sequence[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in stage:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    return env


@pytest.fixture(scope="module")
def image() -> list[dockerfile.Command]:
    return stages()[-1]


def test_multi_stage_on_a_pinned_python_3_11_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "dependencies are installed in a separate build stage"
    bases = [s[0].value[0] for s in all_stages]
    assert set(bases) == {"${BASE}"}, "the venv is copied between stages: same base in both"
    (arg,) = [c for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd == "ARG"]
    name, default = arg.value[0].split("=", 1)
    assert name == "BASE"
    # python:3.11-slim itself floats; a full version tag (optionally a digest) does not.
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", default)


def test_dependencies_are_installed_in_the_build_stage_only(
    image: list[dockerfile.Command],
) -> None:
    build = stages()[0]
    build_name = build[0].value[-1]
    assert build[0].value[1].upper() == "AS", "the build stage is named"
    assert [c for c in build if c.cmd == "RUN" and INSTALL in c.value[0]]
    venv = [c for c in image if c.cmd == "COPY" and f"--from={build_name}" in c.flags]
    assert venv, "the runtime stage copies the installed venv from the build stage"
    src, dest = venv[0].value
    assert src == dest, "a venv must keep its path"
    assert env_of(image)["PATH"].startswith(f"{dest}/bin:"), "`jobrunner` is on PATH"
    assert not [c for c in image if c.cmd == "RUN" and "pip " in c.value[0]]


def test_ci_runs_the_same_install_command_in_a_fresh_venv() -> None:
    """CI proves that the image's install works, since no engine builds the image here."""
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert any(line.endswith(INSTALL) for line in lines), (
        f".ci/run must run `{INSTALL}` (the Dockerfile's install) in a fresh virtual environment"
    )


def test_tini_is_installed_lean_in_the_runtime_stage(image: list[dockerfile.Command]) -> None:
    runs = " ".join(c.value[0] for c in image if c.cmd == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\btini\b", runs)
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_entrypoint_is_exec_form_jobrunner_under_an_init(image: list[dockerfile.Command]) -> None:
    """tini as PID 1 forwards signals to jobrunner and reaps zombies; exec form means no shell
    sits between them (a shell as PID 1 would swallow SIGTERM)."""
    entry = only(image, "ENTRYPOINT")
    assert entry.json, "exec form (JSON array), not shell form"
    assert list(entry.value) == ["/usr/bin/tini", "--", "jobrunner"]
    assert only(image, "STOPSIGNAL").value == ("SIGTERM",)


def test_cmd_runs_the_mounted_config(image: list[dockerfile.Command]) -> None:
    cmd = only(image, "CMD")
    assert cmd.json and list(cmd.value) == ["run", "-c", CONFIG_PATH]


def test_healthcheck_calls_jobrunner_health(image: list[dockerfile.Command]) -> None:
    check = only(image, "HEALTHCHECK")
    assert check.json and list(check.value) == ["CMD", "jobrunner", "health", "-c", CONFIG_PATH]
    flags = dict(f.lstrip("-").split("=", 1) for f in check.flags)
    assert {"interval", "timeout"} <= set(flags)


def test_runs_as_a_numeric_non_root_user(image: list[dockerfile.Command]) -> None:
    """Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd."""
    user, _, group = only(image, "USER").value[0].partition(":")
    assert user.isdigit() and int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    last_user = max(i for i, c in enumerate(image) if c.cmd == "USER")
    assert not [c for c in image[last_user:] if c.cmd == "RUN"], "nothing runs as root after USER"


def test_exposes_the_http_port(image: list[dockerfile.Command]) -> None:
    assert only(image, "EXPOSE").value == ("9108",)


def test_commands_the_image_runs_exist() -> None:
    """CMD and HEALTHCHECK name real `jobrunner` subcommands (checked with the CLI parser)."""
    from tests.unit.test_deploy import UsageError, parse_jobrunner_args

    image = stages()[-1]
    parse_jobrunner_args(list(only(image, "CMD").value))
    parse_jobrunner_args(list(only(image, "HEALTHCHECK").value[2:]))
    with pytest.raises(UsageError):
        parse_jobrunner_args(["health", "--no-such-option"])


# -- .dockerignore --------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """Docker's matching: Go filepath.Match per path, plus `**` for any number of dirs."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, lines: list[str]) -> bool:
    """Is `path` (relative to the context) left out? A match on a parent directory counts;
    the last matching pattern wins; `!` re-includes."""
    rules = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _pattern(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negate
    return result


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    return (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".ci/venv/bin/python",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/0.5/x",
        "jobrunner/__pycache__/cli.cpython-311.pyc",
        "jobs/__pycache__/reports.cpython-311.pyc",
        "tests/unit/__pycache__/x.pyc",
        "jobrunner.egg-info/PKG-INFO",
        "jobrunner.db",
        "tests/integration/test_store.py",
    ],
)
def test_dockerignore_leaves_out(path: str, dockerignore: list[str]) -> None:
    assert ignored(path, dockerignore)


def test_dockerignore_keeps_what_the_images_copy(dockerignore: list[str]) -> None:
    """Every COPY source of both Dockerfiles is in the build context."""
    sources = []
    for path in (ROOT / "Dockerfile", ROOT / "deploy" / "web.Dockerfile"):
        for stage in stages(path):
            for c in stage:
                if c.cmd == "COPY" and not [f for f in c.flags if f.startswith("--from")]:
                    sources += [s.rstrip("/") for s in c.value[:-1]]
    assert "jobrunner" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not ignored(source, dockerignore), f"COPY {source}, but .dockerignore drops it"
    assert not ignored("jobrunner/cli/app.py", dockerignore)
    assert not ignored("jobs/reports.py", dockerignore)


def test_the_matcher_can_tell() -> None:
    """The helper above is not vacuous."""
    assert ignored("a/b/c.pyc", ["**/*.pyc"])
    assert not ignored("a/__pycache__/x", ["__pycache__"]), "Docker anchors at the root"
    assert not ignored("keep.md", ["*.md", "!keep.md"])
