"""deploy/ as an operator gets it: the compose file and both Kustomize overlays validate (Debian's
docker-compose, kubectl's kustomize, the Kubernetes schemas offline), the Dockerfile passes hadolint and
installs only runtime dependencies, and the services started with exactly the arguments and environment
those files give their containers run the pipeline on the embedded stack, their /metrics counters moving.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.common import metrics  # noqa: F401 - registers every FlowSentinel metric in REGISTRY
from services.common.settings import ENV_PREFIX, Settings
from services.common.stack import free_port
from tests import deploy_specs as ds
from tests.conftest import SERVICE_LOGS

K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())  # oldest supported, newest known

# Strimzi's KafkaTopic (kafka.strimzi.io/v1beta2) is a CRD that kubernetes-validate has no schema for: its
# spec as the Strimzi documentation defines it, strict, with the cluster label the Topic Operator needs.
KAFKA_TOPIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "labels": {"type": "object", "required": ["strimzi.io/cluster"]},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object"},
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
            },
        },
    },
}
CRD_SCHEMAS = {("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC_SCHEMA}

PIPELINE = ("collector", "featurizer", "scorer", "alerter")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3?-dev|libc6?-dev)\b")


# ---------------------------------------------------------------- static checks: compose, Kustomize, Dockerfile


def test_compose_file_validates_with_debian_docker_compose() -> None:
    done = subprocess.run(
        [ds.docker_compose(), "-f", str(ds.COMPOSE_FILE), "config", "-q"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    services = ds.compose_config()["services"]
    for name in PIPELINE:
        svc = services[name]
        assert svc["restart"] == "unless-stopped", name
        assert "/readyz" in svc["healthcheck"]["test"], name
    assert services["replay"]["profiles"] == ["load"]
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert any(":/var/lib/kafka/data" in v for v in services["kafka"]["volumes"])
    assert services["scorer"]["environment"]["FLOWSENTINEL_SCORER_BACKEND"] == "grpc"


@pytest.mark.parametrize("overlay", sorted(ds.OVERLAYS))
def test_overlay_renders_and_every_object_validates(overlay: str) -> None:
    docs = ds.render_overlay(overlay)
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
            continue
        for version in K8S_VERSIONS:  # raises on any schema violation, or on a kind it has no schema for
            kubernetes_validate.validate(doc, version, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in PIPELINE:
        assert ("PodDisruptionBudget", name) in kinds
    assert {("HorizontalPodAutoscaler", "featurizer"), ("HorizontalPodAutoscaler", "scorer")} <= kinds
    assert ("Deployment", "tfserving") in kinds and ("PersistentVolumeClaim", "flowsentinel-models") in kinds
    assert any(kind == "NetworkPolicy" for kind, _ in kinds)
    topics = [d for d in docs if d["kind"] == "KafkaTopic"] or [d for d in docs if d["kind"] == "Job"]
    assert topics, "the overlay creates no topics (Strimzi KafkaTopic or the topics Job)"


def test_the_schema_validator_rejects_a_broken_deployment() -> None:
    deployment = next(d for d in ds.render_overlay("prod") if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    topic = next(d for d in ds.render_overlay("prod") if d["kind"] == "KafkaTopic")
    topic["spec"]["partitons"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(topic, KAFKA_TOPIC_SCHEMA)


@pytest.mark.parametrize("overlay", sorted(ds.OVERLAYS))
def test_every_service_deployment_has_probes_resources_and_a_non_root_user(overlay: str) -> None:
    docs = ds.render_overlay(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("flowsentinel-"))
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in pod["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"], doc["metadata"]["name"]
            assert container["readinessProbe"] and container["livenessProbe"], doc["metadata"]["name"]
            if ds._image_name(container["image"]) == ds.IMAGE:
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Strimzi topics are created with the partition count the services are told about.
    for topic in (d for d in docs if d["kind"] == "KafkaTopic"):
        assert topic["spec"]["partitions"] == int(config["data"]["FLOWSENTINEL_PARTITIONS"])


def test_deploy_files_name_only_real_settings() -> None:
    """A misspelt FLOWSENTINEL_* variable is silently ignored by the services: catch it here."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {f"{ENV_PREFIX}SCHEMAS_DIR"}
    texts = [ds.COMPOSE_FILE, ds.DOCKERFILE, *ds.DEPLOY.glob("k8s/**/*.yaml"), *ds.DEPLOY.glob("k8s/**/*.env")]
    named = {var for path in texts for var in re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]+", path.read_text())}
    # ${FLOWSENTINEL_IMAGE} and the like are the compose file's own variables, read by docker compose.
    named -= set(re.findall(rf"\$\{{({ENV_PREFIX}[A-Z0-9_]+)", ds.COMPOSE_FILE.read_text()))
    assert named and named <= known, sorted(named - known)


def test_tfserving_config_is_the_same_for_compose_and_kubernetes() -> None:
    for name in ("models.config", "monitoring.config"):
        assert (ds.DEPLOY / "tfserving" / name).read_text() == (ds.DEPLOY / "k8s/base/tfserving" / name).read_text()
    served = re.findall(r'name: "([\w-]+)"', (ds.DEPLOY / "tfserving/models.config").read_text())
    from services.scorer.backends import MODEL_NAMES

    assert sorted(served) == sorted(MODEL_NAMES)


def test_prometheus_scrapes_every_service_and_grafana_shows_only_real_metrics() -> None:
    prometheus = yaml.safe_load((ds.DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    port = ds.image_env()["FLOWSENTINEL_METRICS_PORT"]
    for name in PIPELINE:  # the long-running services; the replay is a load-test tool without an endpoint
        assert f"{name}:{port}" in targets
    known = {m.name for m in REGISTRY.collect() if m.name.startswith("flowsentinel_")}
    dashboard = json.loads((ds.DEPLOY / "grafana/dashboards/flowsentinel.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(total|bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"flowsentinel_\w+", e)}
    assert used and used <= known, sorted(used - known)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in ("flows/s", "lag", "windows/s", "anomalies", "incidents", "sink errors"):
        assert wanted in titles


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([ds.venv_tool("hadolint"), str(ds.DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_installs_only_what_the_runtime_needs() -> None:
    stages = ds.dockerfile_stages()
    assert list(stages) == ["builder", "runtime"]
    runtime = stages["runtime"]
    runs = [args for instruction, args in runtime if instruction == "RUN"]
    # No package manager and no compiler in the final stage; pip only installs the builder's wheels, offline.
    for run in runs:
        assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b", run), run
        assert not COMPILERS.search(run), run
        for pip in re.findall(r"pip install[^&]*", run):
            assert "--no-index" in pip and "/wheels" in pip and "--no-cache-dir" in pip, pip
    # The builder builds the project without extras: pyproject's dev dependencies never become wheels.
    builder_runs = " ".join(args for instruction, args in stages["builder"] if instruction == "RUN")
    assert "pip wheel --wheel-dir /wheels ." in builder_runs and "[" not in builder_runs
    assert "[dev]" not in ds.DOCKERFILE.read_text()
    # The TF-Serving client is pinned as the Makefile pins it.
    pin = re.search(r"tensorflow-serving-api==[\d.*]+", (ds.REPO / "Makefile").read_text())
    assert pin and pin.group(0) in ds.DOCKERFILE.read_text()
    # Only what the services read at run time is copied in.
    copied = [args for instruction, args in runtime if instruction == "COPY"]
    assert all(c.split()[0] in ("schemas/", "deploy/docker/healthcheck.py") for c in copied), copied
    user = [args for instruction, args in runtime if instruction == "USER"]
    assert user and not user[-1].startswith(("0", "root"))
    assert ("ENTRYPOINT", '["flowsentinel"]') in runtime
    assert any(instruction == "HEALTHCHECK" for instruction, _ in runtime)
    ignored = [line for line in (ds.REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignored[0] == "**" and "!tests/" not in ignored


# ---------------------------------------------------------------- live: the deployed configuration runs

# During a replay, the counter that each service's /metrics must move: (sample name, labels it must carry).
PROGRESS = {
    "collector": ("flowsentinel_flows_published_total", {"source": "udp"}),
    "featurizer": ("flowsentinel_windows_emitted_total", {}),
    "scorer": ("flowsentinel_windows_scored_total", {}),
    "alerter": ("flowsentinel_alerts_sent_total", {}),
}
READY_TIMEOUT_S = 120.0
PROGRESS_TIMEOUT_S = 180.0


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def counter(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, labels: dict[str, str]) -> float:
    return sum(v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= lbl)


def answers(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def netflow_v5_datagram() -> bytes:
    """One NetFlow v5 export with one TCP flow ending now (the collector's input, as a router sends it)."""
    now = int(time.time())
    header = struct.pack("!HHIIIIBBH", 5, 1, 60_000, now, 0, 1, 0, 0, 0)
    src, dst = (int.from_bytes(bytes(a), "big") for a in ((192, 168, 1, 10), (10, 0, 0, 1)))
    record = struct.pack(
        "!IIIHHIIIIHHBBBBHHBBH", src, dst, 0, 1, 2, 10, 1500, 59_000, 60_000, 40000, 443, 0, 0x1B, 6, 0, 0, 0, 24, 24, 0
    )
    return header + record


def specs_of(source: str) -> dict[str, ds.ContainerSpec]:
    """The container specs of a source; the replay (a compose load-test service only) joins every source."""
    compose = ds.compose_specs(ds.compose_config())
    if source == "compose":
        return compose
    overlay = source.split("/", 1)[1]
    return {**ds.k8s_specs(overlay, ds.render_overlay(overlay)), "replay": compose["replay"]}


@pytest.fixture
def model_server(trained_models: Path) -> Iterator[str]:
    """TF-Serving's gRPC API over the trained models (tests/model_server.py), where `tfserving:8500` would be."""
    from tests.model_server import ModelServer

    server = ModelServer(trained_models)
    port = server.start_grpc()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def start(spec: ds.ContainerSpec, workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    """`flowsentinel <args>` with the spec's environment and nothing of this shell's FLOWSENTINEL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(spec.env)
    env["PYTHONPATH"] = str(ds.REPO)  # the image installs the package; here it is the working tree
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *spec.args],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def test_dev_overlay_gives_the_services_what_prod_gives_them() -> None:
    """Why only compose and prod run live below (each run starts TensorFlow: the suite's time is short): dev's
    containers get prod's arguments and environment except the in-cluster addresses, which differ by design
    and are substituted in a live run anyway, and the partition count, which only topic creation reads."""
    differ = {f"{ENV_PREFIX}{n}" for n in ("KAFKA_BOOTSTRAP", "REDIS_URL", "PARTITIONS")}
    dev, prod = (ds.k8s_specs(o, ds.render_overlay(o)) for o in ("dev", "prod"))
    assert set(dev) == set(prod) >= set(PIPELINE)
    for name in prod:
        assert dev[name].args == prod[name].args
        dev_env, prod_env = ({k: v for k, v in s.env.items() if k not in differ} for s in (dev[name], prod[name]))
        assert dev_env == prod_env, name


@pytest.mark.parametrize("source", ["compose", "k8s/prod"])
def test_services_run_with_the_deployed_configuration(
    source: str, settings: Settings, trained_models: Path, model_server: str, tmp_path: Path, request: Any
) -> None:
    from services import runner

    specs = specs_of(source)
    assert set(PIPELINE) <= set(specs), sorted(specs)
    ports = {name: free_port() for name in specs}
    netflow_port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = request.node.stash.setdefault(SERVICE_LOGS, [])

    def launch(name: str) -> None:
        root = tmp_path / name
        local = ds.localize(
            specs[name],
            # Only the in-cluster addresses differ: this session's broker, Redis and model server.
            substitute={
                f"{ENV_PREFIX}KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                f"{ENV_PREFIX}REDIS_URL": settings.redis_url.get_secret_value(),
                f"{ENV_PREFIX}TFSERVING_GRPC": model_server,
            },
            # One host for all: a port each, and this test's namespace on the shared Redis. The Redis URL is
            # what prod's operator-made Secret would hold.
            supply={
                f"{ENV_PREFIX}METRICS_PORT": str(ports[name]),
                f"{ENV_PREFIX}COLLECTOR_LISTEN": f"127.0.0.1:{netflow_port}",
                f"{ENV_PREFIX}NAMESPACE": settings.namespace,
                f"{ENV_PREFIX}REDIS_URL": settings.redis_url.get_secret_value(),
            },
            paths={
                "/models": trained_models,
                "/app/schemas": ds.REPO / "schemas",
                "/data": ds.REPO / "data" / "sample",
                "/tmp": root / "tmp",
                "/var/lib/flowsentinel": root / "data",
            },
        )
        for folder in (root / "tmp", root / "data"):  # these exist in the image (or are volumes)
            folder.mkdir(parents=True, exist_ok=True)
        log = tmp_path / f"{name}.log"
        logs.append(log)
        procs[name] = start(local, root, log)

    def wait_for(what: str, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for name, proc in procs.items():
                assert proc.poll() is None, f"{source} {name} exited with code {proc.returncode} ({what}); see its log"
            assert time.monotonic() < deadline, f"{source}: {what} not reached after {timeout:.0f}s"
            time.sleep(0.5)

    try:
        for name in PIPELINE:
            launch(name)
        wait_for(
            "every service ready", lambda: all(answers(ports[n], "/readyz") == 200 for n in PIPELINE), READY_TIMEOUT_S
        )
        for name in PIPELINE:
            assert answers(ports[name], "/healthz") == 200, name
        before = {name: scrape(ports[name]) for name in PIPELINE}
        launch("replay")
        exporter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def moved() -> bool:
            exporter.sendto(netflow_v5_datagram(), ("127.0.0.1", netflow_port))  # UDP: resent until counted
            return all(
                counter(scrape(ports[n]), *PROGRESS[n]) > counter(before.get(n, {}), *PROGRESS[n]) for n in PROGRESS
            )

        with exporter:
            wait_for("every service's counter moving", moved, PROGRESS_TIMEOUT_S)
        after = {name: scrape(ports[name]) for name in PIPELINE}
        runner.stop_process(procs.pop("replay"))
    finally:
        for proc in procs.values():
            runner.stop_process(proc)
    # The flows went all the way: windows were scored, anomalies raised, and incidents opened from them.
    assert counter(after["scorer"], "flowsentinel_anomalies_total", {}) > 0
    assert counter(after["alerter"], "flowsentinel_incidents_total", {}) > 0
    print(
        f"{source}: "
        + ", ".join(
            f"{n} {PROGRESS[n][0]} {counter(after.get(n, {}), *PROGRESS[n]):.0f}" for n in PIPELINE if n in PROGRESS
        )
    )


def script_topics(script: str) -> set[str]:
    """Topics a kafka-topics.sh script creates: its `for topic in ...` loop over each topic and its .dlq,
    and any topic it names outright."""
    looped = {t for names in re.findall(r"for topic in ([a-z\- ]+); do", script) for t in names.split()}
    named = set(re.findall(r"--topic ([a-z][a-z.\-]*)", script))
    return looped | {f"{t}.dlq" for t in looped} | named


def test_every_deployment_creates_exactly_the_topics_the_services_use() -> None:
    wanted = set(Settings().all_topics())
    compose = ds.compose_config()["services"]["kafka-init"]["command"][0]
    job = (ds.DEPLOY / "k8s/components/topics-job/topics-job.yaml").read_text()
    strimzi = {d["spec"]["topicName"] for d in ds.render_overlay("prod") if d["kind"] == "KafkaTopic"}
    assert "flows-by-dst" in wanted
    assert script_topics(compose) == wanted
    assert script_topics(job) == wanted
    assert strimzi == wanted


def test_the_readme_documents_every_setting() -> None:
    readme = (ds.DEPLOY.parent / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z0-9_]+)`", readme))
    assert not [name.upper() for name in Settings.model_fields if name.upper() not in documented]
