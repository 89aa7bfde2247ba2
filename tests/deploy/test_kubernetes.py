"""docs/kubernetes/seqserve.yaml: parses, has the kinds, probes and ports the service needs,
keys from Secrets, every pod within the `restricted` Pod Security Standard, a preStop delay,
and NetworkPolicies that expose the data port to the ingress, the admin port to monitoring and
Redis to the seqserve pods only."""

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
    assert ports == {"http": 8000, "grpc": 8001, "admin": 8082}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SEQSERVE_ADMIN_PORT"] == "8082"
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


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            found[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
    return found


def test_every_pod_meets_the_restricted_pod_security_standard(docs: list[dict[str, Any]]) -> None:
    """The `restricted` profile's checks (Kubernetes Pod Security Standards), field by field."""
    pods = pod_templates(docs)
    assert set(pods) == {"Deployment/seqserve", "StatefulSet/seqserve-redis", "Job/seqserve-train"}
    for name, pod in pods.items():
        pod_ctx = pod.get("securityContext", {})
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert pod_ctx.get("runAsUser", 1) != 0, name
        for volume in pod.get("volumes", []):
            allowed = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected", "csi"}
            assert set(volume) - {"name"} <= allowed, (name, volume)
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert not ctx.get("privileged", False), where
            assert (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))) is True, where
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) not in (0, None), where
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert not any("hostPort" in p for p in container.get("ports", [])), where


def test_keys_and_redis_password_come_from_a_secret(docs: list[dict[str, Any]]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"], "no secret values in the example"
    pod = one(docs, "Deployment", "seqserve")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret = volumes["secrets"]["secret"]
    assert secret["secretName"] == "seqserve-secrets"
    files = {item["key"]: f"{mounts['secrets']}/{item['path']}" for item in secret["items"]}
    assert env["SEQSERVE_API_KEYS_FILE"] == files["api-keys"]
    assert env["SEQSERVE_ADMIN_KEY_FILE"] == files["admin-key"]
    assert env["SEQSERVE_REDIS_PASSWORD_FILE"] == files["redis-password"]
    assert not {"SEQSERVE_API_KEYS", "SEQSERVE_ADMIN_KEY", "SEQSERVE_ALLOW_ANONYMOUS", "SEQSERVE_ADMIN"} & set(env)
    (redis,) = one(docs, "StatefulSet", "seqserve-redis")["spec"]["template"]["spec"]["containers"]
    redis_env = {e["name"]: e for e in redis["env"]}
    ref = redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "seqserve-secrets", "key": "redis-password"}
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1].endswith("mb")
    assert "REDISCLI_AUTH" in " ".join(redis["readinessProbe"]["exec"]["command"])


def test_prestop_delay_fits_the_grace_period(docs: list[dict[str, Any]]) -> None:
    pod = one(docs, "Deployment", "seqserve")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 3
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + 30  # + the service's 30 s drain


def test_service_publishes_the_data_port_only(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] == "Service":
            for port in d["spec"]["ports"]:
                assert port["targetPort"] not in ("admin", 8082), d["metadata"]["name"]
                assert d["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_network_policies(docs: list[dict[str, Any]]) -> None:
    server_labels = one(docs, "Deployment", "seqserve")["spec"]["template"]["metadata"]["labels"]
    redis_labels = one(docs, "StatefulSet", "seqserve-redis")["spec"]["template"]["metadata"]["labels"]
    server = one(docs, "NetworkPolicy", "seqserve-server")["spec"]
    assert server["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert server["policyTypes"] == ["Ingress"]
    by_port = {}
    for rule in server["ingress"]:
        for port in rule["ports"]:
            by_port[port["port"]] = rule["from"]
    assert set(by_port) == {"http", "admin"}
    assert by_port["http"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert by_port["admin"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    redis = one(docs, "NetworkPolicy", "seqserve-redis")["spec"]
    assert redis["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = redis["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "from the seqserve pods only (no namespace-wide rule)"
    assert source["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
