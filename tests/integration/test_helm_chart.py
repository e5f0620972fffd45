"""The Helm chart, rendered by a real ``helm template`` from ``loader deploy render``'s values.

Every built-in kind is validated against the Kubernetes schemas (strict: no
unknown fields); the CRDs (KEDA's ScaledObject, the Prometheus Operator's
ServiceMonitor) are checked structurally against what the chart must wire.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import Settings
from loader.config.spec import EventSpec, load_specs
from loader.deploy.helm import find_helm
from loader.worker.pool import CHILD_STOP_GRACE_S

HELM = find_helm()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        HELM is None,
        reason="helm is not on the PATH nor at ~/.cache/event-loader/bin/helm (.ci/run installs it)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "event-loader"
EXAMPLES = ROOT / "pipelines"
SECRET = "event-loader-credentials"
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
CRDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
ALERT_RULES = ROOT / "deploy" / "prometheus" / "loader-alerts.yaml"
ENV_VALUES = [
    f"existingSecret={SECRET}",
    "kafka.bootstrapServers=broker-1:9092\\,broker-2:9092",
    "env.LOADER_AWS__REGION=eu-west-1",
]

GATEWAY_KEYS = "event-loader-gateway-keys"
GATEWAY_VALUES = ["gateway.enabled=true", f"gateway.apiKeys.existingSecret={GATEWAY_KEYS}"]

Manifests = list[dict[str, Any]]


def _deploy_render(*args: str) -> None:
    """Run `loader deploy render` on the example specs; it must succeed."""
    result = CliRunner().invoke(cli, ["deploy", "render", "--specs", str(EXAMPLES), *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def specs() -> list[EventSpec]:
    return load_specs(EXAMPLES)


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The values `loader deploy render` writes for the example specs."""
    path = tmp_path_factory.mktemp("helm") / "values.yaml"
    _deploy_render("--image", "ghcr.io/acme/event-loader:1.4.0", "-o", str(path))
    return path


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def render(values_file: Path) -> Callable[..., Manifests]:
    """``helm template`` of the chart with the rendered values and ``--set`` overrides."""

    def run(*settings: str) -> Manifests:
        sets = [arg for setting in settings for arg in ("--set", setting)]
        done = _helm("template", "rel", str(CHART), "--namespace", "events", "-f", str(values_file), *sets)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return run


def _of_kind(manifests: Manifests, kind: str, component: str | None = None) -> Manifests:
    return [
        m
        for m in manifests
        if m["kind"] == kind
        and (component is None or m["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _worker_for(manifests: Manifests, spec: EventSpec) -> dict[str, Any]:
    [deployment] = [
        d
        for d in _of_kind(manifests, "Deployment", "worker")
        if d["spec"]["template"]["spec"]["containers"][0]["args"][2] == spec.name
    ]
    return deployment


def test_helm_lint_is_clean(values_file: Path) -> None:
    """`helm lint --strict` passes with the rendered values, with and without the optional parts."""
    for extra in (
        [],
        ["--set", f"serviceMonitor.enabled=true,autoscaling.enabled=true,{ENV_VALUES[1]}"],
        ["--set", ",".join(GATEWAY_VALUES)],
        ["--set", "prometheusRule.enabled=true"],
        ["--set", "grafanaDashboard.enabled=true"],
    ):
        done = _helm("lint", "--strict", str(CHART), "-f", str(values_file), *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


@pytest.mark.parametrize("service_monitor", [False, True])
@pytest.mark.parametrize("autoscaling", [False, True])
@pytest.mark.parametrize("gateway", [False, True])
def test_manifests_are_valid_kubernetes(
    render: Callable[..., Manifests], service_monitor: bool, autoscaling: bool, gateway: bool
) -> None:
    """Every built-in kind validates strictly; the CRDs and the gateway appear exactly when switched on."""
    manifests = render(
        *ENV_VALUES,
        *(GATEWAY_VALUES if gateway else []),
        f"serviceMonitor.enabled={str(service_monitor).lower()}",
        f"prometheusRule.enabled={str(service_monitor).lower()}",
        f"autoscaling.enabled={str(autoscaling).lower()}",
        f"gateway.autoscaling.enabled={str(autoscaling).lower()}",
    )
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "ServiceAccount"} <= kinds
    assert ("ServiceMonitor" in kinds) == service_monitor
    assert ("PrometheusRule" in kinds) == service_monitor
    assert ("ScaledObject" in kinds) == autoscaling
    assert ("HorizontalPodAutoscaler" in kinds) == (gateway and autoscaling)
    assert bool(_of_kind(manifests, "Deployment", "gateway")) == gateway
    for manifest in manifests:
        if manifest["kind"] in CRDS:
            assert manifest["apiVersion"] == CRDS[manifest["kind"]]
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_one_worker_deployment_per_spec(render: Callable[..., Manifests], specs: list[EventSpec]) -> None:
    """Each spec gets one Deployment running its event, with its spec mounted and its replicas."""
    manifests = render(*ENV_VALUES)
    workers = _of_kind(manifests, "Deployment", "worker")
    assert len(workers) == len(specs)
    config_maps = {c["metadata"]["name"]: c for c in _of_kind(manifests, "ConfigMap")}
    for spec in specs:
        deployment = _worker_for(manifests, spec)
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"][:3] == ["worker", "run", spec.name]
        assert container["image"] == "ghcr.io/acme/event-loader:1.4.0"
        assert 1 <= deployment["spec"]["replicas"] == spec.deployment.replicas <= spec.kafka.partitions
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["LOADER_SPECS_DIR"] == "/etc/event-loader/pipelines"
        assert env["LOADER_AWS__REGION"] == "eu-west-1"
        # The mounted spec is this event's, with its topic.
        [source] = next(v for v in pod["volumes"] if v["name"] == "specs")["projected"]["sources"]
        mounted = config_maps[source["configMap"]["name"]]["data"]
        items = {i["path"]: i["key"] for i in source["configMap"]["items"]}
        assert items[f"pipelines/{spec.name}.yaml"] == "spec.yaml"
        assert yaml.safe_load(mounted["spec.yaml"])["kafka"]["topic"] == spec.kafka.topic
        assert (f"schemas/{spec.name}.avsc" in items) == (spec.schema_path is not None)


@pytest.mark.parametrize("component", ["loader", "gateway"])
def test_mounted_specs_load_in_the_pod_layout(
    render: Callable[..., Manifests], specs: list[EventSpec], tmp_path: Path, component: str
) -> None:
    """The loader's and the gateway's specs volume, written out as the kubelet would, loads as the
    same specs (all of them)."""
    manifests = render(*ENV_VALUES, *GATEWAY_VALUES)
    [loader] = _of_kind(manifests, "Deployment", component)
    config_maps = {c["metadata"]["name"]: c["data"] for c in _of_kind(manifests, "ConfigMap")}
    [volume] = [v for v in loader["spec"]["template"]["spec"]["volumes"] if v["name"] == "specs"]
    [mount] = [
        m for m in loader["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "specs"
    ]
    root = tmp_path / mount["mountPath"].lstrip("/")
    for source in volume["projected"]["sources"]:
        for item in source["configMap"]["items"]:
            target = root / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(config_maps[source["configMap"]["name"]][item["key"]])
    env = {e["name"]: e["value"] for e in loader["spec"]["template"]["spec"]["containers"][0]["env"]}
    loaded = load_specs(tmp_path / env["LOADER_SPECS_DIR"].lstrip("/"))
    assert [(s.name, s.kafka.topic, s.s3.prefix, s.snowflake.table) for s in loaded] == [
        (s.name, s.kafka.topic, s.s3.prefix, s.snowflake.table) for s in specs
    ]


def test_workers_probe_health_and_readiness_and_stop_gracefully(
    render: Callable[..., Manifests], specs: list[EventSpec]
) -> None:
    """Liveness hits /healthz, readiness /readyz on the served port; the grace period outlasts the drain."""
    manifests = render(*ENV_VALUES)
    for spec in specs:
        pod = _worker_for(manifests, spec)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        [port] = container["ports"]
        assert container["args"][container["args"].index("--web-port") + 1] == str(port["containerPort"])
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}
        assert pod["terminationGracePeriodSeconds"] > CHILD_STOP_GRACE_S


def test_pods_are_locked_down(render: Callable[..., Manifests]) -> None:
    """Every pod (the gateway's too) runs non-root, read-only, without capabilities, and writes only
    to emptyDirs."""
    manifests = render(*ENV_VALUES, *GATEWAY_VALUES)
    assert _of_kind(manifests, "Deployment", "gateway")
    for deployment in _of_kind(manifests, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        [container] = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
        assert {m["mountPath"] for m in writable} >= {"/tmp"}
        assert all("emptyDir" in volumes[m["name"]] for m in writable)
        # Credentials only by reference to the existing Secret.
        assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]


def test_pdb_and_service_select_their_events_pods(
    render: Callable[..., Manifests], specs: list[EventSpec]
) -> None:
    """Each event's PDB and Service select its Deployment's pods and no other event's."""
    manifests = render(*ENV_VALUES)
    workers = _of_kind(manifests, "Deployment", "worker")
    for kind, selector_of in (
        ("PodDisruptionBudget", lambda m: m["spec"]["selector"]["matchLabels"]),
        ("Service", lambda m: m["spec"]["selector"]),
    ):
        objects = _of_kind(manifests, kind, "worker")
        assert len(objects) == len(specs)
        for obj in objects:
            selected = [
                d for d in workers if _matches(selector_of(obj), d["spec"]["template"]["metadata"]["labels"])
            ]
            assert [d["metadata"]["name"] for d in selected] == [obj["metadata"]["name"]]
            if kind == "PodDisruptionBudget":
                assert selector_of(obj) == selected[0]["spec"]["selector"]["matchLabels"]


def test_scaled_object_scales_on_lag_up_to_the_partitions(
    render: Callable[..., Manifests], specs: list[EventSpec]
) -> None:
    """With the autoscaler on, KEDA owns replicas: from the spec's count up to the partition count."""
    manifests = render(*ENV_VALUES, "autoscaling.enabled=true", "autoscaling.lagThreshold=5000")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in _of_kind(manifests, "ScaledObject")}
    assert len(scaled) == len(specs)
    for spec in specs:
        deployment = _worker_for(manifests, spec)
        assert "replicas" not in deployment["spec"]
        obj = scaled[deployment["metadata"]["name"]]["spec"]
        assert obj["maxReplicaCount"] == spec.kafka.partitions
        assert obj["minReplicaCount"] == spec.deployment.replicas
        [trigger] = obj["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["topic"] == spec.kafka.topic
        assert trigger["metadata"]["consumerGroup"] == spec.consumer_group
        assert trigger["metadata"]["bootstrapServers"] == "broker-1:9092,broker-2:9092"
        assert trigger["metadata"]["lagThreshold"] == "5000"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())


def test_autoscaler_without_brokers_is_refused(values_file: Path) -> None:
    """KEDA needs the brokers: the chart says which value to set instead of rendering a broken trigger."""
    done = _helm("template", "rel", str(CHART), "-f", str(values_file), "--set", "autoscaling.enabled=true")
    assert done.returncode != 0
    assert "set kafka.bootstrapServers" in done.stderr


def test_service_monitors_scrape_metrics_ports(render: Callable[..., Manifests]) -> None:
    """The ServiceMonitors select the workers', loader's and gateway's Services by a port they expose,
    at /metrics."""
    manifests = render(
        *ENV_VALUES,
        *GATEWAY_VALUES,
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
    )
    monitors = _of_kind(manifests, "ServiceMonitor")
    services = _of_kind(manifests, "Service")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "worker",
        "loader",
        "gateway",
    }
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["events"]}
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        selected = [
            s
            for s in services
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert selected
        for service in selected:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_prometheus_rule_is_the_alert_rule_file(render: Callable[..., Manifests], tmp_path: Path) -> None:
    """prometheusRule.enabled renders deploy/prometheus/loader-alerts.yaml's groups as they are (its
    Prometheus templates untouched), with the chosen labels and absolute runbook links; promtool
    accepts what was rendered."""
    assert not _of_kind(render(*ENV_VALUES), "PrometheusRule")
    [rule] = _of_kind(
        render(
            *ENV_VALUES,
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=prometheus",
            "prometheusRule.runbookBaseUrl=https://git.example/acme/event-loader/blob/main/",
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    expected = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    for group in expected:
        for alert in group["rules"]:
            url = alert["annotations"]["runbook_url"]
            alert["annotations"]["runbook_url"] = f"https://git.example/acme/event-loader/blob/main/{url}"
    assert rule["spec"]["groups"] == expected
    assert "{{ $labels.event }}" in expected[0]["rules"][0]["annotations"]["summary"]
    promtool = shutil.which("promtool") or str(Path.home() / ".cache" / "event-loader" / "bin" / "promtool")
    if Path(promtool).exists():
        rendered = tmp_path / "rendered-rules.yaml"
        rendered.write_text(yaml.safe_dump(rule["spec"]))
        done = subprocess.run(
            [promtool, "check", "rules", str(rendered)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_chart_packages_the_rule_file(tmp_path: Path) -> None:
    """`helm package` puts the rule file itself (not a dangling link) into the chart archive."""
    done = _helm("package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [archive] = tmp_path.glob("event-loader-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("event-loader/files/loader-alerts.yaml")
        assert member is not None
        assert member.read() == ALERT_RULES.read_bytes()


def test_loader_deployment_serves_metrics_and_can_be_turned_off(render: Callable[..., Manifests]) -> None:
    """The loader runs `pipes run` with its metrics port exposed, and disappears when disabled."""
    [loader] = _of_kind(render(*ENV_VALUES), "Deployment", "loader")
    [container] = loader["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["pipes", "run"]
    port = container["args"][container["args"].index("--metrics-port") + 1]
    # Probed and scraped through the pod's IP: the default 127.0.0.1 would refuse both.
    assert container["args"][container["args"].index("--metrics-host") + 1] == "0.0.0.0"
    assert container["ports"] == [{"name": "metrics", "containerPort": int(port), "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert not _of_kind(render(*ENV_VALUES, "loader.enabled=false"), "Deployment", "loader")


def test_hand_edited_replicas_above_partitions_fail(values_file: Path, tmp_path: Path) -> None:
    """Values edited past the partition count fail to render, naming the event and the limit."""
    values = yaml.safe_load(values_file.read_text())
    values["events"][0]["replicas"] = values["events"][0]["partitions"] + 1
    edited = tmp_path / "values.yaml"
    edited.write_text(yaml.safe_dump(values))
    done = _helm("template", "rel", str(CHART), "-f", str(edited))
    assert done.returncode != 0
    assert f"event {values['events'][0]['name']}: replicas 7 exceeds its 6 partitions" in done.stderr


def test_cli_renders_manifests_with_helm(tmp_path: Path, specs: list[EventSpec]) -> None:
    """`loader deploy render --manifests` runs helm and writes one worker Deployment per spec."""
    env_values = tmp_path / "env.yaml"
    env_values.write_text(yaml.safe_dump({"existingSecret": SECRET}))
    out = tmp_path / "manifests.yaml"
    _deploy_render("--manifests", "--chart", str(CHART), "-f", str(env_values), "-o", str(out))
    manifests = [doc for doc in yaml.safe_load_all(out.read_text()) if doc]
    workers = _of_kind(manifests, "Deployment", "worker")
    assert sorted(d["spec"]["template"]["spec"]["containers"][0]["args"][2] for d in workers) == sorted(
        s.name for s in specs
    )
    assert all(d["spec"]["template"]["spec"]["containers"][0]["envFrom"] for d in workers)


def test_server_side_encryption_values_reach_every_pod(
    render: Callable[..., Manifests], values_file: Path
) -> None:
    """aws.sse and aws.sseKmsKeyId reach every pod as LOADER_AWS__ settings; a key without aws:kms fails."""
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    manifests = render(*ENV_VALUES, "aws.sse=aws:kms", f"aws.sseKmsKeyId={key}")
    for deployment in _of_kind(manifests, "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LOADER_AWS__SSE"] == "aws:kms"
        assert env["LOADER_AWS__SSE_KMS_KEY_ID"] == key
    done = _helm("template", "rel", str(CHART), "-f", str(values_file), "--set", f"aws.sseKmsKeyId={key}")
    assert done.returncode != 0
    assert "set aws.sse to aws:kms" in done.stderr


def test_snowflake_secret_reaches_the_loader_only(render: Callable[..., Manifests]) -> None:
    """snowflake.existingSecret (the key pair) is given to the loader alone; workers keep existingSecret."""
    manifests = render(*ENV_VALUES, "snowflake.existingSecret=event-loader-snowflake")
    [loader] = _of_kind(manifests, "Deployment", "loader")
    [container] = loader["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [
        {"secretRef": {"name": SECRET}},
        {"secretRef": {"name": "event-loader-snowflake"}},
    ]
    workers = _of_kind(manifests, "Deployment", "worker")
    assert workers
    for worker in workers:
        [container] = worker["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    alone = render("snowflake.existingSecret=event-loader-snowflake")
    [loader] = _of_kind(alone, "Deployment", "loader")
    assert loader["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "event-loader-snowflake"}}
    ]
    assert all(
        "envFrom" not in w["spec"]["template"]["spec"]["containers"][0]
        for w in _of_kind(alone, "Deployment", "worker")
    )


def test_kafka_tls_secret_is_mounted_into_the_workers_only(render: Callable[..., Manifests]) -> None:
    """kafka.tls.existingSecret is mounted read-only into each worker and names its files in the
    LOADER_KAFKA__SSL_* settings; the loader, which never talks to Kafka, gets neither."""
    manifests = render(*ENV_VALUES, "kafka.tls.existingSecret=kafka-tls", "kafka.tls.clientCertificate=true")
    workers = _of_kind(manifests, "Deployment", "worker")
    assert workers
    for worker in workers:
        pod = worker["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
        assert mount["readOnly"] is True
        folder = mount["mountPath"]
        assert env["LOADER_KAFKA__SSL_CAFILE"] == f"{folder}/ca.crt"
        assert env["LOADER_KAFKA__SSL_CERTFILE"] == f"{folder}/tls.crt"
        assert env["LOADER_KAFKA__SSL_KEYFILE"] == f"{folder}/tls.key"
        volume = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
        assert volume["secret"]["secretName"] == "kafka-tls"
    [loader] = _of_kind(manifests, "Deployment", "loader")
    [container] = loader["spec"]["template"]["spec"]["containers"]
    assert not any(e["name"].startswith("LOADER_KAFKA__SSL") for e in container["env"])
    ca_only = render(*ENV_VALUES, "kafka.tls.existingSecret=kafka-tls")
    for worker in _of_kind(ca_only, "Deployment", "worker"):
        names = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "LOADER_KAFKA__SSL_CAFILE" in names
        assert "LOADER_KAFKA__SSL_CERTFILE" not in names


def test_workers_on_a_shared_topic_mount_their_siblings_specs(tmp_path: Path) -> None:
    """A worker's pod holds the specs of every event on its topic, and they load there with their matches."""
    specs_dir = tmp_path / "pipelines"
    specs_dir.mkdir()
    for name, match in (("a_event", {"event_name": "a"}), ("rest", {"catch_all": True})):
        document = yaml.safe_load((EXAMPLES / "app_click.yaml").read_text())
        document.update(name=name, s3={"bucket": "b-events", "prefix": f"events/{name}"})
        document["kafka"].update(topic="shared", match=match)
        document["snowflake"]["table"] = name.upper()
        (specs_dir / f"{name}.yaml").write_text(yaml.safe_dump(document))
    (specs_dir / "solo.yaml").write_text((EXAMPLES / "app_click.yaml").read_text())
    values = tmp_path / "values.yaml"
    result = CliRunner().invoke(cli, ["deploy", "render", "--specs", str(specs_dir), "-o", str(values)])
    assert result.exit_code == 0, result.output
    done = _helm("template", "rel", str(CHART), "--namespace", "events", "-f", str(values))
    assert done.returncode == 0, done.stderr
    manifests = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    config_maps = {c["metadata"]["name"]: c["data"] for c in _of_kind(manifests, "ConfigMap")}
    mounted: dict[str, list[str]] = {}
    for worker in _of_kind(manifests, "Deployment", "worker"):
        pod = worker["spec"]["template"]["spec"]
        event = pod["containers"][0]["args"][2]
        sources = next(v for v in pod["volumes"] if v["name"] == "specs")["projected"]["sources"]
        pod_dir = tmp_path / event
        for source in sources:
            for item in source["configMap"]["items"]:
                target = pod_dir / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(config_maps[source["configMap"]["name"]][item["key"]])
        loaded = {s.name: s for s in load_specs(pod_dir / "pipelines")}
        mounted[event] = sorted(loaded)
        assert [s.name for s in loaded[event].siblings] == [n for n in mounted[event] if n != event]
    assert mounted == {
        "a_event": ["a_event", "rest"],
        "rest": ["a_event", "rest"],
        "app_click": ["app_click"],
    }


# --- the event gateway ---------------------------------------------------------------------------


def _gateway(manifests: Manifests, kind: str) -> dict[str, Any]:
    [obj] = _of_kind(manifests, kind, "gateway")
    return obj


def test_gateway_is_off_by_default(render: Callable[..., Manifests]) -> None:
    """Without gateway.enabled the chart renders no gateway object and no gateway service account."""
    manifests = render(*ENV_VALUES)
    assert not [
        m for m in manifests if m["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]
    assert not _of_kind(manifests, "HorizontalPodAutoscaler")


def test_gateway_runs_with_the_keys_secret_probes_and_its_own_account(
    render: Callable[..., Manifests], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The gateway pod runs `loader gateway` on all interfaces, reads its keys from the mounted Secret
    (the path its settings name), is probed on the metrics port and runs as its own service account;
    its env loads as gateway settings."""
    manifests = render(
        *ENV_VALUES, *GATEWAY_VALUES, "gateway.port=8090", "gateway.metricsPort=6070", "gateway.processes=2"
    )
    deployment = _gateway(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[0] == "gateway"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "8090"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8090, "metrics": 6070}
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    env = {e["name"]: e["value"] for e in container["env"]}
    # The keys file: a read-only mount of the Secret, holding the key the settings name.
    keys_file = Path(env["LOADER_GATEWAY__API_KEYS_FILE"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(keys_file.parent)]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == GATEWAY_KEYS
    assert [i["path"] for i in volume["secret"]["items"]] == [keys_file.name]
    # The env is real gateway settings (a misspelt name would be ignored silently).
    for var in [v for v in os.environ if v.startswith("LOADER_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    gateway = Settings().gateway
    assert gateway.api_keys_file == keys_file
    assert gateway.metrics_port == 6070
    assert gateway.mode == "sync"
    assert gateway.processes == 2
    assert "LOADER_GATEWAY__ALLOW_ANONYMOUS" not in env
    # Its own service account (its own IAM role), which the chart creates.
    account = pod["serviceAccountName"]
    assert account.endswith("-gateway")
    assert account in {a["metadata"]["name"] for a in _of_kind(manifests, "ServiceAccount", "gateway")}
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"]["cpu"]


def test_gateway_without_a_keys_secret_is_refused(values_file: Path) -> None:
    """The chart has no anonymous gateway: without gateway.apiKeys.existingSecret it says what to set."""
    done = _helm("template", "rel", str(CHART), "-f", str(values_file), "--set", "gateway.enabled=true")
    assert done.returncode != 0
    assert "gateway.apiKeys.existingSecret" in done.stderr


def test_gateway_service_and_pdb_select_only_gateway_pods(render: Callable[..., Manifests]) -> None:
    """The gateway's Service exposes the API and the metrics ports of the gateway pods, and its PDB
    selects exactly those pods."""
    manifests = render(*ENV_VALUES, *GATEWAY_VALUES)
    deployments = _of_kind(manifests, "Deployment")
    service = _gateway(manifests, "Service")
    pdb = _gateway(manifests, "PodDisruptionBudget")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        selected = [d for d in deployments if _matches(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in selected] == ["gateway"]
    [container] = _gateway(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        name: (port, name) for name, port in container_ports.items()
    }


def test_gateway_autoscaler_scales_the_deployment_on_cpu(
    render: Callable[..., Manifests], values_file: Path
) -> None:
    """The HPA owns the gateway's replicas, between the values' min and max, on CPU use; without it the
    Deployment has gateway.replicas; min above max is refused."""
    manifests = render(
        *ENV_VALUES,
        *GATEWAY_VALUES,
        "gateway.autoscaling.minReplicas=3",
        "gateway.autoscaling.maxReplicas=7",
        "gateway.autoscaling.targetCPUUtilizationPercentage=60",
    )
    deployment = _gateway(manifests, "Deployment")
    hpa = _gateway(manifests, "HorizontalPodAutoscaler")["spec"]
    assert "replicas" not in deployment["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 7)
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    fixed = render(*ENV_VALUES, *GATEWAY_VALUES, "gateway.autoscaling.enabled=false", "gateway.replicas=4")
    assert _gateway(fixed, "Deployment")["spec"]["replicas"] == 4
    assert not _of_kind(fixed, "HorizontalPodAutoscaler")
    done = _helm(
        "template",
        "rel",
        str(CHART),
        "-f",
        str(values_file),
        "--set",
        ",".join([*GATEWAY_VALUES, "gateway.autoscaling.minReplicas=5", "gateway.autoscaling.maxReplicas=2"]),
    )
    assert done.returncode != 0
    assert "minReplicas 5 exceeds maxReplicas 2" in done.stderr


def test_gateway_gets_the_kafka_tls_files(render: Callable[..., Manifests]) -> None:
    """The gateway produces to Kafka: it gets kafka.tls.existingSecret mounted and named like the workers."""
    manifests = render(*ENV_VALUES, *GATEWAY_VALUES, "kafka.tls.existingSecret=kafka-tls")
    [container] = _gateway(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
    assert env["LOADER_KAFKA__SSL_CAFILE"] == f"{mount['mountPath']}/ca.crt"


# -- the scheduled audit (audit-cronjob.yaml) ------------------------------------------------------

PUSHGATEWAY = "http://pushgateway.monitoring:9091"
AUDIT_VALUES = ["audit.enabled=true", f"audit.pushgatewayUrl={PUSHGATEWAY}"]


def test_the_audit_is_off_by_default(render: Callable[..., Manifests]) -> None:
    """No CronJob unless audit.enabled."""
    assert _of_kind(render(*ENV_VALUES), "CronJob") == []


def test_the_audit_cronjob_audits_every_event_and_pushes(
    render: Callable[..., Manifests], specs: list[EventSpec]
) -> None:
    """One valid CronJob: `loader audit --json` over every spec, as its own account, pushing to the URL."""
    manifests = render(*ENV_VALUES, *AUDIT_VALUES, "snowflake.existingSecret=sf", "audit.schedule=5 * * * *")
    [job] = _of_kind(manifests, "CronJob", "audit")
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["spec"]["schedule"] == "5 * * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["audit", "--json", "--settle", "900"]  # no EVENT: every spec
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LOADER_AUDIT__PUSHGATEWAY_URL"] == PUSHGATEWAY
    assert env["LOADER_KAFKA__BOOTSTRAP_SERVERS"] == "broker-1:9092,broker-2:9092"
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}, {"secretRef": {"name": "sf"}}]
    # Its own read-only principal (iam-policy-audit.json), created by the chart, not the loader's.
    [loader] = _of_kind(manifests, "Deployment", "loader")
    account = pod["serviceAccountName"]
    assert account.endswith("-audit") and account != loader["spec"]["template"]["spec"]["serviceAccountName"]
    assert account in {a["metadata"]["name"] for a in _of_kind(manifests, "ServiceAccount", "audit")}
    [volume] = [v for v in pod["volumes"] if v["name"] == "specs"]
    mounted = {
        item["path"] for source in volume["projected"]["sources"] for item in source["configMap"]["items"]
    }
    assert {f"pipelines/{spec.name}.yaml" for spec in specs} <= mounted
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_audit_without_a_pushgateway_is_refused(values_file: Path) -> None:
    """Enabled without audit.pushgatewayUrl fails the render, naming the value to set."""
    done = _helm("template", "rel", str(CHART), "-f", str(values_file), "--set", "audit.enabled=true")
    assert done.returncode != 0
    assert "audit.pushgatewayUrl" in done.stderr


def test_helm_lint_is_clean_with_the_audit(values_file: Path) -> None:
    """`helm lint --strict` passes with the audit on."""
    done = _helm("lint", "--strict", str(CHART), "-f", str(values_file), "--set", ",".join(AUDIT_VALUES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


# --- the Grafana dashboard -----------------------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "event-loader.json"


def _dashboard_config_maps(manifests: Manifests) -> Manifests:
    return _of_kind(manifests, "ConfigMap", "dashboard")


def test_grafana_dashboard_config_map_carries_the_dashboard_for_the_sidecar(
    render: Callable[..., Manifests],
) -> None:
    """Off by default; when enabled, one valid ConfigMap holds deploy/grafana/event-loader.json as is,
    with the sidecar's label (configurable, values quoted), annotations and namespace."""
    assert not _dashboard_config_maps(render(*ENV_VALUES))
    [config_map] = _dashboard_config_maps(render(*ENV_VALUES, "grafanaDashboard.enabled=true"))
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in config_map["metadata"]
    assert json.loads(config_map["data"]["event-loader.json"]) == json.loads(DASHBOARD.read_text())
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(config_map, version, strict=True)
    [custom] = _dashboard_config_maps(
        render(
            *ENV_VALUES,
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.labels.grafana_dashboard=null",
            "grafanaDashboard.labels.dashboards=2",
            "grafanaDashboard.annotations.grafana_folder=Event loader",
            "grafanaDashboard.namespace=monitoring",
        )
    )
    metadata = custom["metadata"]
    assert metadata["labels"]["dashboards"] == "2" and "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Event loader"}
    assert metadata["namespace"] == "monitoring"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(custom, version, strict=True)


def test_grafana_dashboard_without_a_sidecar_label_is_refused(values_file: Path) -> None:
    """A dashboard ConfigMap no sidecar would find is refused, naming the value to set."""
    done = _helm(
        "template",
        "rel",
        str(CHART),
        "-f",
        str(values_file),
        "--set",
        "grafanaDashboard.enabled=true,grafanaDashboard.labels=null",
    )
    assert done.returncode != 0
    assert "grafanaDashboard.labels is empty" in done.stderr


def test_packaged_chart_carries_the_dashboard(values_file: Path, tmp_path: Path) -> None:
    """`helm package` keeps the dashboard file: the packaged chart renders the same JSON."""
    done = _helm("package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [package] = tmp_path.glob("event-loader-*.tgz")
    done = _helm(
        "template", "rel", str(package), "-f", str(values_file), "--set", "grafanaDashboard.enabled=true"
    )
    assert done.returncode == 0, done.stderr
    [config_map] = _dashboard_config_maps([doc for doc in yaml.safe_load_all(done.stdout) if doc])
    assert json.loads(config_map["data"]["event-loader.json"]) == json.loads(DASHBOARD.read_text())
