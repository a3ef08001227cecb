"""deploy/: the compose file, the Prefect deployments and the KubeRay cluster, checked offline.

There is no Docker engine on CI, so `docker compose config` runs only where it works; the
checks below parse the files and hold them against the code they configure (settings
fields, flow signatures, service names, ports).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from biofuse.config import Settings, load_settings
from biofuse.errors import MediaError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BIOFUSE_SERVICES = {"ray-head", "ray-worker", "prefect-worker", "prefect-deploy"}
ONE_SHOT = {"minio-init", "prefect-deploy"}


# what a user puts in deploy/.env: compose has no default for a secret
SECRETS = {
    "CATALOG_DB_PASSWORD": "catalog-pw-1",
    "PREFECT_DB_PASSWORD": "prefect-pw-2",
    "MINIO_ROOT_PASSWORD": "minio-pw-3",
    "RAY_AUTH_TOKEN": "ray-token-4",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR:-default}` and `${VAR:?error}` with `env` (default: only the secrets
    set): the values a user gets; KeyError where compose would refuse to start."""
    env = SECRETS if env is None else env

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment", {})
    return {k: interpolate(str(v)) for k, v in env.items()}


def test_compose_brings_up_every_service_the_design_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "prefect-db",
        "catalog-db",
        "prefect-server",
        "ray-head",
        "ray-worker",
        "minio",
        "prefect-worker",
    } <= set(services)
    for name in BIOFUSE_SERVICES:  # one image, built from deploy/Dockerfile at the repo root
        assert services[name]["image"] == "biofuse:0.1.0"
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert services["prefect-db"]["image"].startswith("postgres:")
    assert services["catalog-db"]["image"].startswith("postgres:")
    assert services["prefect-server"]["image"] == "prefecthq/prefect:3.8.8-python3.11"
    import prefect

    assert prefect.__version__ == "3.8.8", "the server image must match the client"


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_deps(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name not in ONE_SHOT and name not in {"ray-worker", "prefect-worker"}:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s missing check"
            else:
                assert condition == "service_completed_successfully" and dep in ONE_SHOT


def test_volumes_are_declared_and_databases_and_store_persist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts = {
        name: [interpolate(str(v)).split(":") for v in service.get("volumes", [])]
        for name, service in compose["services"].items()
    }
    for name, service_mounts in mounts.items():
        for parts in service_mounts:
            source = parts[0]
            assert source.startswith(".") or source in declared, f"{name}: undeclared {source}"
    assert ["prefect-db", "/var/lib/postgresql/data"] in mounts["prefect-db"]
    assert ["catalog-db", "/var/lib/postgresql/data"] in mounts["catalog-db"]
    assert ["store", "/data"] in mounts["minio"]
    # the actors load weights from the models volume; the flows read the archive
    assert any(p[:2] == ["models", "/models"] for p in mounts["ray-worker"])
    assert any(p[1] == "/archive" for p in mounts["prefect-worker"])


def test_biofuse_settings_point_at_the_compose_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = compose["services"]
    env = service_env(compose, "prefect-worker")
    for name in BIOFUSE_SERVICES - {"prefect-deploy"}:  # every process sees the same settings
        assert {k: v for k, v in service_env(compose, name).items() if k in env} == env
    # every BIOFUSE_* variable is a real setting, and together they validate
    for key, value in env.items():
        if key.startswith("BIOFUSE_"):
            assert key.removeprefix("BIOFUSE_").lower() in Settings.model_fields, key
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("BIOFUSE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no biofuse.toml: the environment alone
    settings = load_settings()

    catalog = make_url(settings.catalog_url)
    db = service_env(compose, "catalog-db")
    assert catalog.drivername == "postgresql+psycopg"  # the driver biofuse installs
    assert (catalog.host, catalog.port) == ("catalog-db", 5432)
    assert (catalog.username, catalog.password, catalog.database) == (
        db["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
        db["POSTGRES_DB"],
    )
    prefect_db = make_url(
        service_env(compose, "prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert (prefect_db.drivername, prefect_db.host) == ("postgresql+asyncpg", "prefect-db")
    assert prefect_db.password == service_env(compose, "prefect-db")["POSTGRES_PASSWORD"]

    # the store: an s3:// URL on the bucket minio-init creates, at the MinIO endpoint
    store = urlsplit(settings.store_url)
    assert store.scheme == "s3"
    assert f"store/{store.netloc}" in " ".join(services["minio-init"]["command"])
    assert urlsplit(env["FSSPEC_S3_ENDPOINT_URL"]).hostname == "minio"
    minio = service_env(compose, "minio")
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]

    # Ray: the client port the head opens; Prefect: the server's API
    ray = urlsplit(settings.ray_address)
    assert (ray.scheme, ray.hostname) == ("ray", "ray-head")
    assert f"--ray-client-server-port={ray.port}" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    api = urlsplit(env["PREFECT_API_URL"])
    assert api.hostname == "prefect-server" and api.path == "/api"
    assert str(api.port) in services["prefect-server"]["command"]


def test_compose_refuses_to_start_without_its_secrets() -> None:
    """Issue 18 item 9: passwords and tokens fell back to values printed in this repository."""
    text = (DEPLOY / "compose.yaml").read_text()
    uses = VARIABLE.findall(text)
    secret = re.compile(r"PASSWORD|TOKEN|SECRET")
    assert {name for name, _, _ in uses if secret.search(name)} == set(SECRETS)
    for name, op, _ in uses:
        if secret.search(name):
            assert op == "?", f"${{{name}}} must have no default"
    for name in SECRETS:  # each one missing alone stops compose
        with pytest.raises(KeyError, match=name):
            interpolate(text, {k: v for k, v in SECRETS.items() if k != name})
    example = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / ".env.example").read_text(), re.M))
    assert all(example[name] == "" for name in SECRETS)  # no known secret to copy
    docker = shutil.which("docker")
    if (
        docker
        and not subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        done = subprocess.run(
            [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode != 0 and "CATALOG_DB_PASSWORD" in done.stderr


def test_compose_config_accepted_by_docker_where_an_engine_exists() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("no `docker compose` here: the parse checks above stand in for it")
    done = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, **SECRETS},
    )
    assert done.returncode == 0, done.stderr


def test_image_builds_from_the_repository_root_with_the_object_store_client() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "scripts/setup.sh" in dockerfile and "s3fs" in dockerfile
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def build_deployments(monkeypatch: pytest.MonkeyPatch, timezone: str) -> dict[str, Any]:
    """prefect.yaml -> RunnerDeployment objects, the way `prefect deploy` builds them.

    Prefect's own loader validates the file; the flows load from their entrypoints;
    `{{ $VAR }}` placeholders are filled from the environment; schedules are built by
    the same function the CLI uses. Nothing is sent to a server.
    """
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.templating import apply_values
    from rich.console import Console

    monkeypatch.setenv("BIOFUSE_REBUILD_TIMEZONE", timezone)
    monkeypatch.chdir(DEPLOY.parent)  # entrypoints are relative to the repository root
    configs, actions = _load_deploy_configs_and_actions(
        DEPLOY / "prefect.yaml", console=Console(quiet=True)
    )
    assert actions["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/biofuse"}}
    ]
    built = {}
    for config in configs:
        config = apply_values(config, os.environ, remove_notset=False)
        flow = load_flow_from_entrypoint(config["entrypoint"])
        deployment = RunnerDeployment(
            name=config["name"],
            flow_name=flow.name,
            entrypoint=config["entrypoint"],
            parameters=config.get("parameters", {}),
            work_pool_name=config["work_pool"]["name"],
            tags=config.get("tags"),
            concurrency_limit=config.get("concurrency_limit"),
            schedules=[
                _schedule_config_to_deployment_schedule(s)["schedule"]
                for s in config.get("schedules") or []
            ],
        )
        deployment._set_defaults_from_flow(flow)
        built[config["name"]] = (deployment, flow)
    return built


def test_prefect_yaml_builds_the_two_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    built = build_deployments(monkeypatch, "Europe/Berlin")
    assert set(built) == {"process-archive", "rebuild-gallery"}

    archive, archive_flow = built["process-archive"]
    assert archive.flow_name == "process_archive" and archive.schedules == []  # on demand
    assert archive.work_pool_name == "biofuse"
    assert set(archive.parameters) == {"archive", "modalities", "models"}
    accepted = inspect.signature(archive_flow.fn).parameters
    assert set(archive.parameters) <= set(accepted), "every parameter is one the flow takes"
    schema = archive._parameter_openapi_schema.properties
    assert {"archive", "modalities", "models"} <= set(schema)

    rebuild, _ = built["rebuild-gallery"]
    assert rebuild.flow_name == "rebuild_gallery"
    (schedule,) = rebuild.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert rebuild.concurrency_limit == 1


def test_rebuild_time_zone_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    built = build_deployments(monkeypatch, "America/New_York")
    (schedule,) = built["rebuild-gallery"][0].schedules
    assert schedule.schedule.timezone == "America/New_York"
    with pytest.raises(ValueError, match="Invalid timezone"):
        build_deployments(monkeypatch, "Mars/Olympus_Mons")


def test_process_archive_parameters_become_settings() -> None:
    from biofuse.flows.archive import _with_choices

    merged = _with_choices({"home": "/h"}, ["voice"], {"voice": "resemblyzer-ge2e"})
    settings = Settings(**merged)
    assert settings.modalities == ["voice"] and settings.voice_model == "resemblyzer-ge2e"
    with pytest.raises(ValueError, match="smell_model"):
        Settings(**_with_choices(None, None, {"smell": "nose-1"}))


def test_kuberay_cluster_has_cpu_and_gpu_workers_on_the_biofuse_image() -> None:
    import ray

    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    spec = manifest["spec"]
    assert spec["rayVersion"] == ray.__version__, "cluster and client Ray must match"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports["client"] == 10001  # BIOFUSE_RAY_ADDRESS=ray://biofuse-head-svc:10001
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    images = {head_container["image"]}
    for name, group in groups.items():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        images.add(container["image"])
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus is not None) == (name == "gpu")
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in container[
            "volumeMounts"
        ]
    assert images == {"biofuse:0.1.0"}


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, re.M))
    assert used == documented, f"undocumented: {used - documented}, unused: {documented - used}"


def test_archive_url_is_staged_locally_once(tmp_path: Path) -> None:
    """process-archive takes an fsspec URL (s3://... in production; memory:// here)."""
    import fsspec
    from biofuse.flows.archive import list_archive, stage_archive

    fs = fsspec.filesystem("memory")
    root = f"/archive-{tmp_path.name}"
    fs.pipe({f"{root}/cam1/a.mp4": b"a" * 100, f"{root}/b.MKV": b"b" * 50, f"{root}/x.txt": b""})
    local = stage_archive(f"memory://{root}", tmp_path / "staging")
    assert [p.relative_to(local).as_posix() for p in list_archive(local)] == ["b.MKV", "cam1/a.mp4"]
    assert (local / "cam1" / "a.mp4").read_bytes() == b"a" * 100
    assert not (local / "x.txt").exists()
    before = (local / "cam1" / "a.mp4").stat().st_mtime_ns
    assert stage_archive(f"memory://{root}", tmp_path / "staging") == local
    assert (local / "cam1" / "a.mp4").stat().st_mtime_ns == before, "fetched again"
    with pytest.raises(MediaError, match="no such file or folder"):
        stage_archive(f"memory://{root}-absent", tmp_path / "staging")
