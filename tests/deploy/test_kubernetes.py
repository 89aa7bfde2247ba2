"""docs/kubernetes/seqserve.yaml: parses, has the kinds, probes and ports the service needs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all((REPO / "docs/kubernetes/seqserve.yaml").read_text()) if d]
    for d in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
    return documents


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_kinds_present(docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "seqserve"),
        ("Service", "seqserve"),
        ("StatefulSet", "seqserve-redis"),
        ("Service", "seqserve-redis"),
        ("PersistentVolumeClaim", "seqserve-models"),
    } <= kinds


def test_deployment_probes_env_resources_volume(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment", "seqserve")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SEQSERVE_PORT"] == "8000" and env["SEQSERVE_HOST"] == "0.0.0.0"
    assert env["SEQSERVE_GRPC_PORT"] == "8001"
    assert env["SEQSERVE_SESSION_STORE"] == "redis://seqserve-redis:6379/0"
    assert env["SEQSERVE_MODEL_REPOSITORY"] == "/models"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "seqserve-models"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER


def test_service_targets_the_container_port(docs: list[dict[str, Any]]) -> None:
    service = one(docs, "Service", "seqserve")
    deployment = one(docs, "Deployment", "seqserve")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["targetPort"] in ("http", 8000)
    assert ports["grpc"]["targetPort"] in ("grpc", 8001) and ports["grpc"]["appProtocol"] == "grpc"
    assert "sessionAffinity" not in service["spec"] or service["spec"]["sessionAffinity"] == "None"


def test_redis_persists_with_aof(docs: list[dict[str, Any]]) -> None:
    redis = one(docs, "StatefulSet", "seqserve-redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert container["image"].startswith("redis:7")
    (template,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[template["metadata"]["name"]] == "/data"
    service = one(docs, "Service", "seqserve-redis")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 6379
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
