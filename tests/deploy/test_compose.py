"""docker-compose.yml, checked structurally with pyyaml (no Docker engine runs in the tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO

REPLICAS = ("seqserve-1", "seqserve-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def env(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {k: str(v) for k, v in value.items()}


def image_default(value: str) -> str:
    """`${VAR:-default}` -> default: every image can be overridden, with the real one as default."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]+)\}", value)
    assert match, f"{value}: image names are overridable (${{NAME:-default}})"
    return match.group(1)


def test_services_present(compose: dict[str, Any]) -> None:
    assert {"redis", *REPLICAS, "nginx", "train", "seqserve-gpu"} <= set(compose["services"])
    assert {"models", "redis-data"} <= set(compose["volumes"])


def test_images_are_overridable_with_real_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert image_default(services["redis"]["image"]) == "redis:7"
    assert image_default(services["nginx"]["image"]).startswith("nginx:1.")
    assert image_default(services["seqserve-1"]["image"]) == "seqserve:latest"


def test_redis_append_only_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "redis-data:/data" in redis["volumes"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in redis["volumes"]}
    conf_target = mounts["./service/deploy/redis.conf"]
    script_target = mounts["./service/deploy/redis.sh"]
    assert redis["entrypoint"] == ["sh", script_target] and redis["command"] == ["start"]
    script = (REPO / "service/deploy/redis.sh").read_text()
    assert f"REDIS_CONF:-{conf_target}" in script, "redis.sh starts redis-server with the mounted redis.conf"
    conf = (REPO / "service/deploy/redis.conf").read_text().splitlines()
    assert "appendonly yes" in conf
    assert "ports" not in redis, "redis stays on the compose network"
    assert redis["healthcheck"]["test"] == ["CMD", "sh", script_target, "health"]


def test_redis_has_a_password_from_a_secret_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["secrets"] == ["redis_password"]
    assert "requirepass" not in json.dumps(compose), "the password is not in the compose file"
    script = (REPO / "service/deploy/redis.sh").read_text()
    assert "/run/secrets/redis_password" in script and "requirepass" in script
    conf = [line.split("#", 1)[0].strip() for line in (REPO / "service/deploy/redis.conf").read_text().splitlines()]
    assert "maxmemory-policy noeviction" in conf
    assert any(re.fullmatch(r"maxmemory \d+[kmg]b", line) for line in conf), "a memory cap"
    assert not any(line.startswith("requirepass") for line in conf)
    assert redis["user"] == "redis" and redis["read_only"] is True


def test_keys_come_from_secret_files(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    assert set(secrets) == {"api_keys", "admin_key", "redis_password"}
    for name, secret in secrets.items():
        assert set(secret) == {"file"}, "file-based secrets"
        assert secret["file"] == f"${{SEQSERVE_SECRETS_DIR:-./secrets}}/{name}"
    for name in REPLICAS:
        service = compose["services"][name]
        assert set(service["secrets"]) == set(secrets)
        e = env(service)
        assert e["SEQSERVE_API_KEYS_FILE"] == "/run/secrets/api_keys"
        assert e["SEQSERVE_ADMIN_KEY_FILE"] == "/run/secrets/admin_key"
        assert e["SEQSERVE_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert not {"SEQSERVE_API_KEYS", "SEQSERVE_ADMIN_KEY", "SEQSERVE_REDIS_PASSWORD"} & set(e), "no inline secrets"
        assert "SEQSERVE_ALLOW_ANONYMOUS" not in e and e.get("SEQSERVE_ADMIN", "on") == "on"
    assert "secrets/" in (REPO / ".gitignore").read_text().splitlines()
    assert "secrets:" in (REPO / "Makefile").read_text()


def test_replicas_are_locked_down_and_admin_is_never_published(compose: dict[str, Any]) -> None:
    for name in (*REPLICAS, "seqserve-gpu"):
        service = compose["services"][name]
        assert env(service)["SEQSERVE_ADMIN_PORT"] == "8082"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        for port in service.get("ports", []):
            assert not str(port).endswith(":8082"), f"{name} publishes the admin port"
    nginx_ports = compose["services"]["nginx"]["ports"]
    # HTTP data plane and gRPC data plane (grpc.conf); nothing else
    assert nginx_ports == ["${SEQSERVE_HTTP_PORT:-8080}:80", "${SEQSERVE_GRPC_PUBLISHED_PORT:-8081}:8081"]


def test_replicas_share_redis_and_models(compose: dict[str, Any]) -> None:
    for name in REPLICAS:
        service = compose["services"][name]
        assert env(service)["SEQSERVE_SESSION_STORE"] == "redis://redis:6379/0"  # password: from the secret
        assert env(service)["SEQSERVE_HOST"] == "0.0.0.0"
        assert service["build"]["target"] == "serve"
        assert "models:/models:ro" in service["volumes"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/opt/seqserve/healthcheck.py" in service["healthcheck"]["test"]
        assert "ports" not in service, "replicas are reached through nginx only"
        assert "profiles" not in service
    assert compose["services"]["seqserve-1"] == compose["services"]["seqserve-2"]


def test_nginx_fronts_the_replicas_with_the_repo_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in nginx["volumes"]}
    assert mounts["./service/deploy/nginx.conf"] == "/etc/nginx/nginx.conf"
    # The included files sit next to nginx.conf (relative includes).
    assert mounts["./service/deploy/upstreams.conf"] == "/etc/nginx/upstreams.conf"
    assert mounts["./service/deploy/listen.conf"] == "/etc/nginx/listen.conf"
    assert mounts["./service/deploy/grpc.conf"] == "/etc/nginx/grpc.conf"  # KServe V2 gRPC, port 8081
    for source in mounts:
        assert (REPO / source).is_file(), source
    assert set(nginx["depends_on"]) == set(REPLICAS)
    assert all(dep["condition"] == "service_healthy" for dep in nginx["depends_on"].values())
    assert any(str(p).endswith(":80") for p in nginx["ports"])
    assert any(str(p).endswith(":8081") for p in nginx["ports"])
    assert "healthcheck" in nginx
    upstreams = (REPO / "service/deploy/upstreams.conf").read_text()
    for name in REPLICAS:
        assert f"server {name}:8000" in upstreams


def test_train_is_a_one_shot_profile_writing_the_models_volume(compose: dict[str, Any]) -> None:
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "train"
    assert "models:/models" in train["volumes"]
    assert "/models" in train["command"]
    assert train.get("restart", "no") == "no"


def test_gpu_profile_reserves_an_nvidia_device(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["seqserve-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["image"] != compose["services"]["seqserve-1"]["image"]
    assert env(gpu)["SEQSERVE_PROVIDER"] == "cuda"
    assert env(gpu)["SEQSERVE_SESSION_STORE"] == "redis://redis:6379/0"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name != "train":
            assert service.get("healthcheck", {}).get("test"), name


def test_build_contexts_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        if "build" in service:
            assert (REPO / service["build"]["context"] / "Dockerfile").is_file()
            assert Path(service["build"]["context"]) == Path(".")
