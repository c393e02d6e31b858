"""The Kubernetes manifests under deploy/k8s: valid for a pinned Kubernetes version
(kubernetes-validate's schemas, strict: no unknown fields), every container command and probe
one our own CLI parses, every environment variable a real setting, the engine's shard index
taken from the StatefulSet pod ordinal, restricted pods, and the parts agreeing with each
other (selectors, ports, the shard count, Redis's config with the compose one)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engine.shard import EngineSettings
from ingest.settings import IngestSettings
from notify.settings import NotifySettings
from proto import keys
from proto.settings import load
from tests.deploy.test_deploy_files import COMPOSE_DIR, parse_command, setting_names
from web.settings import WebSettings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"  # the pod-index label the shards read is GA from 1.32 (beta 1.28)
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
WORKLOADS = ("Deployment", "StatefulSet")
# Environment variables of our containers that are not StormAlert settings, and why.
NOT_SETTINGS = {"FORWARDED_ALLOW_IPS": "uvicorn's: trust the ingress controller's headers"}
PLACEHOLDERS = {"", "CHANGE-ME", "CHANGE-ME-to-a-long-random-string",
                "redis://:CHANGE-ME@redis:6379/0"}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifests() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads() -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] in WORKLOADS]


def our_containers() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) of every container running our image."""
    return [(w["metadata"]["name"], c) for w in workloads()
            for c in w["spec"]["template"]["spec"]["containers"] if c["image"] == "stormalert"]


def errors(doc: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path))
        return f"{doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}"
    return None


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    docs = manifests()
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Deployment", "Service",
            "Ingress", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert [e for e in map(errors, docs) if e] == []
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization()["namespace"], doc


def test_the_validation_rejects_broken_manifests() -> None:
    engine = copy.deepcopy(find("StatefulSet", "engine"))
    engine["spec"]["replicas"] = "two"
    assert errors(engine) and "replicas" in str(errors(engine))
    web = copy.deepcopy(find("Deployment", "web"))
    web["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exce"] = {}
    assert errors(web) and "exce" in str(errors(web))


def test_the_kustomization_lists_every_manifest_and_names_our_image() -> None:
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert [i["name"] for i in kustomization()["images"]] == ["stormalert"]


def test_every_command_and_probe_is_one_our_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = set()
    for workload, c in our_containers():
        kind, ns = parse_command(c["command"], monkeypatch)
        assert kind == workload, (workload, c["command"])
        kinds.add(kind)
        assert not getattr(ns, "check", False)
        for probe in ("startupProbe", "livenessProbe"):
            check_kind, check = parse_command(c[probe]["exec"]["command"], monkeypatch)
            # The probe is the process's own --check, with the same settings (environment).
            assert (check_kind, check.check) == (kind, True), (workload, probe)
            assert c[probe]["exec"]["command"] == ["stormalert", kind, "--check"]
    assert kinds == {"ingest", "engine", "notify", "backtest", "web"}


def env_names(container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(find("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            names |= set(find("Secret", source["secretRef"]["name"])["stringData"])
    return names


def test_every_environment_variable_is_a_real_setting() -> None:
    known = setting_names() | set(NOT_SETTINGS)
    for workload, c in our_containers():
        assert env_names(c) - known == set(), workload
    assert {"STORMALERT_SHARD", "STORMALERT_SHARDS", "STORMALERT_REDIS_URL"} <= env_names(
        dict(next(c for w, c in our_containers() if w == "engine")))


def test_the_config_map_and_secret_values_are_accepted_by_the_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**find("ConfigMap", "stormalert-config")["data"],
                        **find("Secret", "stormalert-secrets")["stringData"]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STORMALERT_KITE_API_KEY", "filled-in-by-the-operator")
    monkeypatch.setenv("STORMALERT_SHARD", "1")
    engine = load(EngineSettings)
    assert (engine.shard, engine.shards) == (1, 2)
    assert load(IngestSettings).feed == "kite"
    assert load(NotifySettings).dashboard_url.startswith("https://")
    assert load(WebSettings).cookie_secure is True


def test_engine_shards_take_their_index_from_the_pod_ordinal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = find("StatefulSet", "engine")
    shards = int(find("ConfigMap", "stormalert-config")["data"]["STORMALERT_SHARDS"])
    assert engine["spec"]["replicas"] == shards
    assert engine["spec"]["podManagementPolicy"] == "Parallel"
    [container] = engine["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["stormalert", "engine"]  # index and count from the env
    [shard_env] = [e for e in container["env"] if e["name"] == "STORMALERT_SHARD"]
    assert shard_env["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX
    # What the kubelet sets in pod engine-3 of 4, read by the engine's settings...
    monkeypatch.setenv("STORMALERT_SHARD", "3")
    monkeypatch.setenv("STORMALERT_SHARDS", "4")
    assert load(EngineSettings).shard == 3
    # ... and on a cluster without the label (older than 1.28) the value is empty: a clear
    # configuration error, not shard 0 twice.
    monkeypatch.setenv("STORMALERT_SHARD", "")
    with pytest.raises(SystemExit) as exit_info:
        load(EngineSettings)
    assert exit_info.value.code == 2
    assert "bad configuration: shard" in capsys.readouterr().err
    # The ingest worker and the backtest worker take the same count from the same place.
    for name in ("ingest", "backtest"):
        [c] = [c for w, c in our_containers() if w == name]
        assert "--shards" not in c["command"] and "stormalert-config" in str(c["envFrom"])
    assert keys.SHARDS == "sa:shards"


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in workloads()]


def test_every_pod_is_restricted_and_sized() -> None:
    for name, spec in pod_specs():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert "livenessProbe" in c, name
    ns = find("Namespace", "stormalert")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"


def test_disruption_budgets_and_services_select_existing_pods() -> None:
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in
              ((w["metadata"]["name"], w) for w in workloads())}

    def selects(selector: dict[str, str]) -> list[str]:
        return [n for n, lab in labels.items() if selector.items() <= lab.items()]

    for doc in manifests():
        if doc["kind"] == "PodDisruptionBudget":
            assert len(selects(doc["spec"]["selector"]["matchLabels"])) == 1, doc
        if doc["kind"] == "Service":
            assert selects(doc["spec"]["selector"]) == [doc["metadata"]["name"]], doc
    assert {d["metadata"]["name"] for d in manifests() if d["kind"] == "PodDisruptionBudget"} \
        == {"engine", "notify", "web"}
    for doc in workloads():
        if doc["kind"] == "StatefulSet":
            assert find("Service", doc["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def test_the_redis_network_policy_lets_every_stormalert_pod_in() -> None:
    """The policy selects pods by a label: one missing from a pod template would cut that
    process off from Redis (kustomize's `labels` do not reach pod templates)."""
    policy = find("NetworkPolicy", "redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    allowed = source["podSelector"]["matchLabels"].items()
    for name, w in ((w["metadata"]["name"], w) for w in workloads()):
        assert allowed <= w["spec"]["template"]["metadata"]["labels"].items(), name
    assert rule["ports"] == [{"port": 6379}]


def test_web_is_served_through_the_ingress_with_server_sent_events_unbuffered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    [web] = [c for w, c in our_containers() if w == "web"]
    _kind, ns = parse_command(web["command"], monkeypatch)
    [port] = web["ports"]
    assert (port["name"], port["containerPort"]) == ("http", ns.port)
    assert web["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = find("Service", "web")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    events, rest = find("Ingress", "web-events"), find("Ingress", "web")
    notes = events["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert "proxy-buffering" not in str(rest["metadata"]["annotations"])
    for ingress, path in ((events, "/events"), (rest, "/")):
        [rule] = ingress["spec"]["rules"]
        [route] = rule["http"]["paths"]
        assert route["path"] == path
        assert route["backend"]["service"] == {"name": "web", "port": {"name": "http"}}
        assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]


def directives(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_redis_runs_the_compose_config_on_a_volume_with_the_secret_password() -> None:
    conf = find("ConfigMap", "redis-conf")["data"]["redis.conf"]
    assert directives(conf) == directives((COMPOSE_DIR / "redis.conf").read_text())
    redis = find("StatefulSet", "redis")
    [c] = redis["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert "$(REDIS_PASSWORD)" in c["command"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/data", "/usr/local/etc/redis"}
    assert re.search(r"^dir /data$", conf, flags=re.M)
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    secret = c["env"][0]["valueFrom"]["secretKeyRef"]
    assert secret["key"] in find("Secret", secret["name"])["stringData"]


def test_no_real_secret_is_in_the_manifests() -> None:
    for doc in manifests():
        if doc["kind"] == "Secret":
            for key, value in doc["stringData"].items():
                assert value in PLACEHOLDERS, (doc["metadata"]["name"], key)
            assert "data" not in doc
