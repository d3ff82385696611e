"""deploy/ (issue 6, item 5): the compose file and the Kubernetes manifest load, use real
config keys and real `jobrunner` commands, and agree with the Dockerfile and the config."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.main import get_command

from jobrunner.config import Config, load_config
from jobrunner.errors import ConfigError
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
CONFIG_PATH = "/etc/jobrunner/jobrunner.toml"
ENV = {"JOBRUNNER_DATABASE_URL": "postgresql://jobrunner:pw@postgres:5432/jobrunner"}


# click's UsageError, whether typer uses click or its vendored copy of it.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def cli() -> Any:
    """The `jobrunner` click group with every command registered."""
    from jobrunner.cli import app

    return get_command(app)


def subcommands(command: Any) -> dict[str, Any] | None:
    """A group's commands by name; None for a leaf command."""
    commands = getattr(command, "commands", None)
    return dict(commands) if isinstance(commands, dict) else None


def parse_jobrunner_args(argv: list[str]) -> Any:
    """Parse `jobrunner ARGV` with the real CLI without running it; raise UsageError if the
    command does not exist or its options or arguments are wrong."""
    command, args, path = cli(), list(argv), "jobrunner"
    while (commands := subcommands(command)) is not None:
        if not args:
            raise UsageError(f"{path}: missing subcommand")
        name = args.pop(0)
        if name not in commands:
            raise UsageError(f"{path} has no command {name!r}")
        command, path = commands[name], f"{path} {name}"
    command.make_context(path, args)
    return command


def load_deploy_config(text: str | None = None, tmp: Path | None = None) -> Config:
    path = DEPLOY / "jobrunner.toml"
    if text is not None:
        assert tmp is not None
        path = tmp / "jobrunner.toml"
        path.write_text(text)
    return load_config(path, environ=ENV, import_funcs=False)


def duration(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


# -- deploy/jobrunner.toml ----------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> Config:
    return load_deploy_config()


def test_container_config_loads_with_the_url_from_the_environment(config: Config) -> None:
    assert config.database.url == "postgresql+psycopg://jobrunner:pw@postgres:5432/jobrunner"
    assert config.http is not None and (config.http.host, config.http.port) == ("0.0.0.0", 9108)
    assert config.worker.heartbeat * 2 < config.worker.lease_ttl
    assert config.logging.format == "json", "one JSON event per line for the log stack"


def test_container_config_refuses_to_start_without_the_database_url() -> None:
    with pytest.raises(ConfigError, match="JOBRUNNER_DATABASE_URL"):
        load_config(DEPLOY / "jobrunner.toml", environ={}, import_funcs=False)


def test_container_config_jobs_are_in_the_image(config: Config) -> None:
    """import_paths point where the Dockerfile copies the example jobs, and every func exists."""
    from tests.unit.test_container import stages

    copies = {c.value[-1]: c.value[0] for c in stages()[-1] if c.cmd == "COPY"}
    assert [str(p) for p in config.worker.import_paths] == ["/app"]
    for job in config.jobs:
        module, _, func = job.func.partition(":")
        top = module.split(".")[0]
        assert copies.get(f"/app/{top}") == top, f"the image has no /app/{top}"
        source = ROOT / (module.replace(".", "/") + ".py")
        names = {
            n.name
            for n in ast.parse(source.read_text()).body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        assert func in names, f"{job.func}: no such function in {source}"


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def jobrunner_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("build", {}).get("dockerfile") == "Dockerfile"
    }


def test_compose_has_postgres_upgrade_three_replicas_and_the_web_app(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:15"
    ours = jobrunner_services(compose)
    upgrades = [n for n, s in ours.items() if s["command"][:2] == ["db", "upgrade"]]
    workers = [n for n, s in ours.items() if s["command"][:1] == ["run"]]
    assert len(upgrades) == 1 and workers
    upgrade = upgrades[0]
    assert ours[upgrade]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert ours[upgrade].get("restart") == "no", "a one-shot"
    replicas = sum(ours[n].get("deploy", {}).get("replicas", 1) for n in workers)
    assert replicas == 3
    for name in workers:
        assert ours[name]["depends_on"] == {
            upgrade: {"condition": "service_completed_successfully"}
        }, "workers start only after the schema upgrade completed"
    web = [s for s in services.values() if s.get("command", [""])[0] == "uvicorn"]
    assert len(web) == 1
    check_web_command(web[0]["command"])


def test_compose_mounts_the_config_and_passes_the_url(compose: dict[str, Any]) -> None:
    for name, svc in jobrunner_services(compose).items():
        assert f"./jobrunner.toml:{CONFIG_PATH}:ro" in svc["volumes"], name
        url = svc["environment"]["JOBRUNNER_DATABASE_URL"]
        assert re.fullmatch(r"postgresql://\w+:\$\{POSTGRES_PASSWORD:-\w+\}@postgres:5432/\w+", url)
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_compose_stop_timeout_exceeds_shutdown_grace(
    compose: dict[str, Any], config: Config
) -> None:
    """Docker's default stop timeout (10s) would SIGKILL a draining worker."""
    grace = config.worker.shutdown_grace.total_seconds()
    for name, svc in jobrunner_services(compose).items():
        if svc["command"][0] == "run":
            assert duration(svc["stop_grace_period"]) > grace, name


def check_web_command(command: list[str]) -> None:
    """`uvicorn [--factory] examples.fastapi_app:NAME`: NAME is the app, or with --factory a
    function returning it, in examples/fastapi_app.py."""
    assert command[0] == "uvicorn"
    (target,) = [a for a in command[1:] if ":" in a and not a.startswith("-")]
    module, _, name = target.partition(":")
    assert module == "examples.fastapi_app"
    tree = ast.parse((ROOT / "examples" / "fastapi_app.py").read_text())
    if "--factory" in command:
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    else:
        defined = {
            t.id
            for n in tree.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
    assert name in defined, f"examples/fastapi_app.py has no {name!r} for {command}"


def test_jobs_the_example_web_app_enqueues_are_configured(config: Config) -> None:
    """The app enqueues by name (its `*_JOB` constants); the workers must define those jobs."""
    tree = ast.parse((ROOT / "examples" / "fastapi_app.py").read_text())
    enqueued = {
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id.endswith("_JOB") for t in n.targets)
    }
    assert enqueued, "no *_JOB constant found in examples/fastapi_app.py"
    assert enqueued <= {job.name for job in config.jobs}


# -- kubernetes.yaml ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def jobrunner_containers(k8s: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for kind in ("Deployment", "Job"):
        for c in containers(k8s[kind]):
            if "/jobrunner:" in c["image"]:
                yield c


def test_configmap_carries_the_container_config(
    k8s: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    text = k8s["ConfigMap"]["data"]["jobrunner.toml"]
    assert text == (DEPLOY / "jobrunner.toml").read_text(), "keep it equal to deploy/jobrunner.toml"
    load_deploy_config(text, tmp_path)
    name = k8s["ConfigMap"]["metadata"]["name"]
    for kind in ("Deployment", "Job"):
        pod = k8s[kind]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in containers(k8s[kind]):
            for mount in c.get("volumeMounts", []):
                assert volumes[mount["name"]]["configMap"]["name"] == name
                assert f"{mount['mountPath']}/jobrunner.toml" == CONFIG_PATH


def test_deployment_runs_jobrunner_as_a_sidecar_of_the_web_app(
    k8s: dict[str, dict[str, Any]],
) -> None:
    names = [c["name"] for c in containers(k8s["Deployment"])]
    assert "jobrunner" in names and len(names) == 2
    web = next(c for c in containers(k8s["Deployment"]) if c["name"] != "jobrunner")
    check_web_command(web["command"])
    sidecar = next(c for c in containers(k8s["Deployment"]) if c["name"] == "jobrunner")
    assert sidecar["args"] == ["run", "-c", CONFIG_PATH] and "command" not in sidecar


def test_termination_grace_exceeds_shutdown_grace(
    k8s: dict[str, dict[str, Any]], config: Config
) -> None:
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config.worker.shutdown_grace.total_seconds()


def test_database_url_comes_from_a_secret(k8s: dict[str, dict[str, Any]]) -> None:
    for kind in ("Deployment", "Job"):
        for c in containers(k8s[kind]):
            env = {e["name"]: e for e in c["env"]}
            ref = env["JOBRUNNER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"], c["name"]
            assert "value" not in env["JOBRUNNER_DATABASE_URL"]


def test_probes_use_health_and_readyz_on_the_http_port(
    k8s: dict[str, dict[str, Any]], config: Config
) -> None:
    assert config.http is not None
    sidecar = next(c for c in containers(k8s["Deployment"]) if c["name"] == "jobrunner")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert list(ports.values()) == [config.http.port]
    live = sidecar["livenessProbe"]
    assert live["exec"]["command"][:2] == ["jobrunner", "health"] or live["httpGet"]["path"] == (
        "/healthz"
    )
    ready = sidecar["readinessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and ports[ready["port"]] == config.http.port


def test_every_container_has_resources_and_runs_non_root(k8s: dict[str, dict[str, Any]]) -> None:
    from tests.unit.test_container import only, stages

    uid = int(only(stages()[-1], "USER").value[0].partition(":")[0])
    for kind in ("Deployment", "Job"):
        pod = k8s[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        for c in containers(k8s[kind]):
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


def test_a_job_upgrades_the_schema(k8s: dict[str, dict[str, Any]]) -> None:
    (job,) = containers(k8s["Job"])
    assert job["args"][:2] == ["db", "upgrade"]
    assert k8s["Job"]["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


# -- every command is real ------------------------------------------------------------------


def test_every_jobrunner_command_in_deploy_exists(
    compose: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    invocations = [svc["command"] for svc in jobrunner_services(compose).values()]
    for c in jobrunner_containers(k8s):
        invocations.append(c["args"])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = c.get(probe, {}).get("exec", {}).get("command")
            if command:
                assert command[0] == "jobrunner"
                invocations.append(command[1:])
    assert len(invocations) >= 5
    for argv in invocations:
        parse_jobrunner_args(argv)


def test_every_jobrunner_command_in_the_operations_guide_exists() -> None:
    """Commands in shell blocks are parsed whole; inline ones by their command path."""
    text = (ROOT / "docs" / "operations.md").read_text()
    checked = 0
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("jobrunner "):
                parse_jobrunner_args(line.split()[1:])
                checked += 1
    for span in re.findall(r"`jobrunner ([a-z][a-z ]*)", text):
        command = cli()
        for word in span.split():
            commands = subcommands(command)
            if commands is None:
                break
            assert word in commands, f"docs/operations.md: `jobrunner {span}`: no {word!r}"
            command = commands[word]
        checked += 1
    assert checked >= 5


def test_every_toml_example_in_the_operations_guide_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    for n, block in enumerate(blocks):
        path = tmp_path / f"block{n}.toml"
        path.write_text(block)
        load_config(path, environ=ENV, import_funcs=False)


def test_the_parser_rejects_what_does_not_exist() -> None:
    """parse_jobrunner_args is not vacuous."""
    assert parse_jobrunner_args(["db", "upgrade", "-c", CONFIG_PATH]).name == "upgrade"
    for argv in (["db", "downgrade"], ["run", "--bogus"], ["db"], ["nope"]):
        with pytest.raises(UsageError):
            parse_jobrunner_args(argv)
