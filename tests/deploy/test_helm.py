"""helm-chart/ through Helm v4's own SDK (helm-python-sdk: lint, schema, render) and the rendered
manifests through kubernetes-validate --strict for a pinned Kubernetes version.

Scenarios: the default values and every helm-chart/ci/*-values.yaml (GPU, external Qdrant/Redis,
monitoring on). Properties the deployment relies on are asserted on the rendered objects.
"""
from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, run

CHART = ROOT / "helm-chart"
KUBE_VERSION = "1.33.0"  # K3s v1.33 line; kubernetes-validate 1.37.0 ships schemas up to 1.37
CRD_KINDS = {"ServiceMonitor"}  # not in the Kubernetes API schemas: checked by the tests below
SCENARIOS = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "demo", "stack"


def values_of(scenario: str) -> dict | None:
    return None if scenario == "default" else yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text())


def render(helm, values: dict | None = None, chart: Path = CHART) -> dict[str, list[dict]]:
    """Template path -> the objects it renders (NOTES.txt left out)."""
    with helm.Chart.load(str(chart)) as c:
        out = c.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: [d for d in yaml.safe_load_all(text) if d]
            for path, text in out.items() if not path.endswith("NOTES.txt")}


def objects(rendered: dict[str, list[dict]]) -> list[dict]:
    return [d for docs in rendered.values() for d in docs]


def find(objs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (
        component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)]


def one(objs, kind, component=None) -> dict:
    found = find(objs, kind, component)
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def container(obj: dict, name: str) -> dict:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def kubernetes_validate(binary: str, manifests: str, tmp_path: Path, name: str = "rendered.yaml"):
    f = tmp_path / name
    f.write_text(manifests)
    return run([binary, "--strict", "-k", KUBE_VERSION, str(f)])


@pytest.fixture(scope="module")
def rendered(helm):
    return {s: render(helm, values_of(s)) for s in SCENARIOS}


def test_ci_scenarios_exist():
    assert {"gpu", "external", "monitoring"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(helm, scenario):
    report = helm.lint(str(CHART), values_of(scenario), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_values_match_the_schema(helm, scenario):
    with helm.Chart.load(str(CHART)) as c:
        assert c.schema is not None
        c.validate_schema(c.merge_values(values_of(scenario)))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_manifests_pass_kubernetes_validate_strict(kubernetes_validate_bin, rendered, scenario, tmp_path):
    docs = objects(rendered[scenario])
    text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    r = kubernetes_validate(kubernetes_validate_bin, text, tmp_path)
    assert r.returncode == 0, r.output
    passed = re.findall(r"passed for resource (\S+)/", r.output)
    expected = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert len(passed) == len(expected), r.output
    unknown = re.findall(r"Couldn't find schema for kind (\S+)", r.output)
    assert set(unknown) <= CRD_KINDS, r.output


def test_one_resource_per_template_file_grouped_by_component(rendered):
    for scenario, by_file in rendered.items():
        for path, docs in by_file.items():
            assert len(docs) <= 1, f"{scenario}: {path} renders {len(docs)} objects"
    dirs = {Path(p).parent.name for p in (str(x.relative_to(CHART)) for x in (CHART / "templates").rglob("*.yaml"))}
    assert {"search-api", "llm-service", "qdrant", "redis", "tests"} <= dirs
    assert (CHART / "templates" / "_helpers.tpl").exists() and (CHART / "templates" / "NOTES.txt").exists()


@pytest.mark.parametrize("component,port", [("search-api", 8001), ("llm-service", 8002)])
def test_services_probe_readyz_and_healthz(rendered, component, port):
    objs = objects(rendered["default"])
    dep = one(objs, "Deployment", component)
    c = container(dep, component)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    svc = one(objs, "Service", component)
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_as_non_root(rendered, scenario):
    pods = [o for o in objects(rendered[scenario]) if o["kind"] in ("Deployment", "StatefulSet", "Pod")]
    assert pods
    for o in pods:
        spec = o["spec"]["template"]["spec"] if o["kind"] != "Pod" else o["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, o["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] > 0
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]


def test_gpu_is_requested_only_when_enabled(rendered):
    cpu = container(one(objects(rendered["default"]), "Deployment", "llm-service"), "llm-service")
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert not cpu["image"].endswith("-cuda")
    objs = objects(rendered["gpu"])
    dep = one(objs, "Deployment", "llm-service")
    gpu = container(dep, "llm-service")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"].endswith(":42-abc1234-cuda")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["runtimeClassName"] == "nvidia"
    assert one(objs, "ConfigMap")["data"]["LLM_DEVICE"] == "cuda"
    assert one(objects(rendered["default"]), "ConfigMap")["data"]["LLM_DEVICE"] == "cpu"


def test_llm_service_rolls_without_downtime_and_gets_models_from_a_volume(rendered):
    objs = objects(rendered["default"])
    dep = one(objs, "Deployment", "llm-service")
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    pvc = one(objs, "PersistentVolumeClaim")
    assert models["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    init = pod["initContainers"][0]
    assert "scripts/optimize_model.py" in init["command"] and "/models" in init["command"]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]
    assert {"name": "models", "mountPath": "/models"} in container(dep, "llm-service")["volumeMounts"]
    ext = one(objects(rendered["external"]), "Deployment", "llm-service")["spec"]["template"]["spec"]
    assert next(v for v in ext["volumes"] if v["name"] == "models") == {"name": "models", "emptyDir": {}}


def test_search_api_scales_and_survives_disruptions(rendered):
    objs = objects(rendered["default"])
    dep = one(objs, "Deployment", "search-api")
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert "replicas" not in dep["spec"]  # the HPA owns the replica count
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] >= 1


def test_qdrant_runs_distributed_with_storage_and_redis_in_chart(rendered):
    objs = objects(rendered["monitoring"])
    q = one(objs, "StatefulSet", "qdrant")
    assert q["spec"]["replicas"] == 3
    assert q["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "storage"
    qc = container(q, "qdrant")
    env = {e["name"]: e.get("value") for e in qc["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    assert "--bootstrap" in qc["args"][0]
    assert re.search(r":v\d+\.\d+\.\d+$", qc["image"])
    headless = [s for s in find(objs, "Service", "qdrant") if s["spec"].get("clusterIP") == "None"]
    assert headless and headless[0]["metadata"]["name"] == q["spec"]["serviceName"]
    r = one(objs, "StatefulSet", "redis")
    assert r["spec"]["volumeClaimTemplates"]
    cm = one(objs, "ConfigMap")["data"]
    client = [s for s in find(objs, "Service", "qdrant") if s["spec"].get("clusterIP") != "None"]
    assert len(client) == 1
    assert cm["SEARCH_QDRANT_URL"] == f"http://{client[0]['metadata']['name']}:6333"
    assert cm["SEARCH_REDIS_URL"].startswith(f"redis://{one(objs, 'Service', 'redis')['metadata']['name']}:6379")


LAYOUT = ("SEARCH_QDRANT_SHARD_NUMBER", "SEARCH_QDRANT_REPLICATION_FACTOR", "SEARCH_QDRANT_WRITE_CONSISTENCY_FACTOR")


def layout(objs: list[dict]) -> tuple:
    cm = one(objs, "ConfigMap")["data"]
    return tuple(cm.get(k) for k in LAYOUT)


def test_collection_layout_follows_the_qdrant_cluster(helm, rendered, monkeypatch):
    """New collections get a shard per in-chart peer, 2 copies once there are 2 peers, writes acknowledged
    by 1 copy; explicit values win; an external Qdrant gets only what is set. The search service's own
    settings class reads the rendered ConfigMap."""
    assert layout(objects(rendered["default"])) == ("1", "1", "1")          # one peer
    monitoring = objects(rendered["monitoring"])
    assert one(monitoring, "StatefulSet", "qdrant")["spec"]["replicas"] == 3
    assert layout(monitoring) == ("3", "2", "1")
    assert layout(objects(rendered["external"])) == (None, None, None)     # the service's default, 1/1/1
    assert layout(objects(render(helm, {"qdrant": {"replicaCount": 2}}))) == ("2", "2", "1")
    assert layout(objects(render(helm, {"qdrant": {"replicaCount": 6}, "searchApi": {"qdrant": {
        "shardNumber": 12, "replicationFactor": 3, "writeConsistencyFactor": 2}}}))) == ("12", "3", "2")
    assert layout(objects(render(helm, {"qdrant": {"enabled": False, "external": {"url": "http://q:6333"}},
                                        "searchApi": {"qdrant": {"replicationFactor": 2}}}))) == (None, "2", None)

    from search_service.core.settings import Settings
    for key, value in one(monitoring, "ConfigMap")["data"].items():
        if key.startswith("SEARCH_"):
            monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.qdrant_shard_number, s.qdrant_replication_factor, s.qdrant_write_consistency_factor) == (3, 2, 1)


@pytest.mark.parametrize("values,message", [
    ({"searchApi": {"qdrant": {"replicationFactor": 2}}}, "exceeds qdrant.replicaCount"),     # 1 peer
    ({"qdrant": {"replicaCount": 3}, "searchApi": {"qdrant": {"writeConsistencyFactor": 3}}},
     "exceeds the replication"),
])
def test_collection_layout_the_cluster_cannot_hold_fails_to_render(helm, values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(helm, values)


def test_external_qdrant_and_redis_replace_the_statefulsets(rendered):
    objs = objects(rendered["external"])
    assert not find(objs, "StatefulSet")
    cm = one(objs, "ConfigMap")["data"]
    assert cm["SEARCH_QDRANT_URL"] == "https://qdrant.example.internal:6333"
    assert "SEARCH_REDIS_URL" not in cm  # it may hold a password: it comes from the Secret
    env = {e["name"]: e for e in container(one(objs, "Deployment", "search-api"), "search-api")["env"]}
    assert env["SEARCH_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert env["SEARCH_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "stack-api-key"
    secret = one(objs, "Secret")
    assert "redis-url" in secret["data"] and "api-key" not in secret["data"]


def test_api_key_is_a_secret_and_settings_a_configmap(rendered):
    objs = objects(rendered["monitoring"])
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "change-me"
    for comp, prefix in (("search-api", "SEARCH"), ("llm-service", "LLM")):
        c = container(one(objs, "Deployment", comp), comp)
        env = {e["name"]: e for e in c["env"]}
        assert env[f"{prefix}_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"], "key": "api-key", "optional": True}
        assert env[f"{prefix}_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "admin-key"
        assert c["envFrom"][0]["configMapRef"]["name"] == one(objs, "ConfigMap")["metadata"]["name"]
        assert c["image"].startswith("registry.example.internal/stack/")
    assert "change-me" not in yaml.safe_dump(one(objs, "ConfigMap"))


def test_service_monitors_only_when_monitoring_is_on(rendered):
    assert not find(objects(rendered["default"]), "ServiceMonitor")
    objs = objects(rendered["monitoring"])
    for comp in ("search-api", "llm-service"):
        sm = one(objs, "ServiceMonitor", comp)
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        svc = one(objs, "Service", comp)
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def test_helm_test_hook_searches_through_the_service(rendered):
    objs = objects(rendered["default"])
    pod = one(objs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    script = c["args"][0]
    assert '"/search/hybrid"' in script and "/collections" in script
    svc = one(objs, "Service", "search-api")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SEARCH_URL"] == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    compile(script, "helm-test", "exec")  # the hook's Python is at least valid Python


def test_image_tags_follow_the_values(helm):
    objs = objects(render(helm, {"searchApi": {"image": {"tag": "17-deadbee"}},
                                 "llmService": {"image": {"tag": "17-deadbee"}}}))
    assert container(one(objs, "Deployment", "search-api"), "search-api")["image"] == "search-service:17-deadbee"
    llm = one(objs, "Deployment", "llm-service")["spec"]["template"]["spec"]
    assert llm["containers"][0]["image"] == "llm-service:17-deadbee"
    assert llm["initContainers"][0]["image"] == "llm-service-export:17-deadbee"


# ---- the gate can fail -------------------------------------------------------------------------

def test_lint_reports_a_broken_template(helm, tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    f = chart / "templates" / "search-api" / "service.yaml"
    f.write_text(f.read_text().replace("{{ include \"stack.searchApi.fullname\" . }}", "{{ include \"stack.searchApi.fullname\" . ", 1))
    report = helm.lint(str(chart), None, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), report


def test_schema_rejects_bad_values(helm):
    with helm.Chart.load(str(CHART)) as c:
        for bad in ({"llmService": {"gpu": {"enabled": "yes"}}},
                    {"searchApi": {"replicas": 3}},
                    {"searchApi": {"service": {"port": 70000}}},
                    {"searchApi": {"qdrant": {"shardNumber": 0}}},
                    {"searchApi": {"qdrant": {"replicas": 2}}}):
            with pytest.raises(helm.HelmValuesError):
                c.validate_schema(c.merge_values(bad))


@pytest.mark.parametrize("mutation", ["misspelled-field", "wrong-type", "missing-required"])
def test_kubernetes_validate_rejects_a_broken_manifest(kubernetes_validate_bin, rendered, tmp_path, mutation):
    dep = yaml.safe_load(yaml.safe_dump(one(objects(rendered["default"]), "Deployment", "search-api")))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    if mutation == "misspelled-field":
        c["readinessProbe"]["httpGet"]["paht"] = c["readinessProbe"]["httpGet"].pop("path")
    elif mutation == "wrong-type":
        c["ports"][0]["containerPort"] = "eight-thousand"
    else:
        del dep["spec"]["selector"]
    r = kubernetes_validate(kubernetes_validate_bin, yaml.safe_dump(dep), tmp_path, "broken.yaml")
    assert r.returncode != 0, r.output
