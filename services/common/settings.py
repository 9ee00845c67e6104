"""Settings shared by every service: env vars (FLOWSENTINEL_*) > YAML file > running stack > defaults.

The YAML file is named by FLOWSENTINEL_CONFIG. When `flowsentinel stack up` has recorded a running
stack in the run folder, its broker and Redis addresses are used unless env or YAML name others,
so services started after `stack up` find the stack without any exports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "FLOWSENTINEL_"
REPO_ROOT = Path(__file__).resolve().parents[2]


class RunningStackSource(PydanticBaseSettingsSource):
    """Broker and Redis addresses of the stack recorded in <run_dir>/stack.json, if any."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(os.environ.get(f"{ENV_PREFIX}RUN_DIR", ".run"))
        path = run_dir / "stack.json"
        if not path.is_file():
            return {}
        try:
            stack = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: stack[k] for k in ("kafka_bootstrap", "redis_url") if k in stack}


ROLE_TOPICS = {"src": "flows", "dst": "flows-by-dst"}  # host role -> the topic its windows are built from


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Where things run
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may hold a password)")
    run_dir: Path = Field(Path(".run"), description="Where the embedded stack records pids, ports and logs")
    namespace: str = Field("", description="Prefix for topics, consumer groups and Redis keys (isolates runs)")
    partitions: int = Field(4, ge=1, description="Partitions per topic created by `stack up`")
    metrics_port: int = Field(0, ge=0, description="Port of /metrics, /healthz, /readyz (0 = off)")
    session_timeout_s: float = Field(6.0, gt=0, description="Consumer-group session timeout (short: fast local joins)")

    # Collector (UDP NetFlow/IPFIX listener)
    collector_listen: str = Field("0.0.0.0:2055", description="host:port list (comma-separated) the collector binds")
    collector_rcvbuf: int = Field(8 << 20, ge=0, description="Socket receive buffer bytes per port (0 = OS default)")
    template_timeout_s: float = Field(1800.0, gt=0, description="Forget a v9/IPFIX template not refreshed this long")
    template_hold_s: float = Field(10.0, ge=0, description="Hold data sets this long for a template not seen yet")

    # Featurizer
    window_seconds: float = Field(60.0, ge=1, description="Event-time tumbling window length per host")
    lateness_seconds: float = Field(30.0, ge=0, description="How late (event time) a flow may arrive and still count")
    idle_flush_seconds: float = Field(
        3.0, gt=0, description="A partition without flows this long and nothing unread is idle: a stopped replay closes"
    )
    future_tolerance_s: float = Field(
        300.0, gt=0, description="Reject flows starting more than this ahead of the clock (bad exporter clocks)"
    )
    early_emit_flows: int = Field(50, ge=0, description="Emit an open window early at N, 2N, 4N... flows (0 = off)")
    early_emit_seconds: float = Field(20.0, ge=0, description="...and every this many event-time seconds (0 = off)")
    early_emit_min_flows: int = Field(
        5, ge=1, description="...if it holds this many flows (smaller windows, most of them, wait for the close)"
    )
    history_windows: int = Field(8, ge=1, description="K: the host's last windows the LSTM reads")
    host_ttl_seconds: int = Field(86400, gt=0, description="Forget a host's window history after this long quiet")
    window_roles: str = Field(
        "src,dst",
        pattern=r"^src(,dst)?$",
        description="Host windows built: src (flows a host started), dst (flows it received; doubles the flow topics)",
    )
    featurizer_batch: int = Field(5000, ge=1, le=1_000_000, description="Flows per featurizer batch")
    featurizer_batch_wait_s: float = Field(0.2, gt=0, description="Max wait to fill a featurizer batch")

    # Scorer
    models_dir: Path = Field(Path("models"), description="TF-Serving layout: models/<name>/<version>/")
    scorer_batch: int = Field(512, ge=1, description="Max host windows per scoring batch")
    scorer_batch_wait_s: float = Field(0.2, gt=0, description="Max wait to fill a scoring batch")
    explain_top: int = Field(3, ge=1, description="Features named in an anomaly's explanation")
    scorer_backend: Literal["inprocess", "grpc", "rest"] = Field(
        "inprocess", description="Model backend: SavedModels in this process, or TF-Serving over gRPC or REST"
    )
    tfserving_grpc: str = Field("127.0.0.1:8500", description="TF-Serving gRPC address (host:port)")
    tfserving_rest: str = Field("http://127.0.0.1:8501", description="TF-Serving REST base URL")
    model_timeout_s: float = Field(10.0, gt=0, description="Deadline of one TF-Serving request")
    model_retry_max_s: float = Field(30.0, gt=0, description="Longest backoff between retries of an unscored batch")
    model_poll_s: float = Field(5.0, gt=0, description="How often to look for a new model version")

    # Alerter
    alerts_file: Path = Field(Path("alerts.jsonl"), description="JSONL sink path")
    alerts_stdout: bool = Field(True, description="Also print each alert as one line on stdout")
    incident_gap_seconds: float = Field(600.0, ge=0, description="Anomalies of a host this close join one incident")
    alert_sinks: str = Field("jsonl", description="Comma-separated sinks: jsonl, stdout, syslog, hec, elastic, webhook")
    alert_digest_seconds: float = Field(3600.0, ge=0, description="Re-send an ongoing incident this often (0 = off)")
    suppression_file: str = Field("", description="YAML file of suppression rules (empty = none)")
    alert_queue_max: int = Field(10000, ge=1, description="Alerts a sink's on-disk queue holds while it is down")
    alert_retry_base_s: float = Field(1.0, gt=0, description="First retry delay of a failed delivery; doubles per try")
    alert_retry_max_s: float = Field(300.0, gt=0, description="Longest retry delay of a failed delivery")
    alert_max_attempts: int = Field(10, ge=1, description="Delivery attempts before an alert goes to alerts.dlq")
    alert_sink_wait_s: float = Field(2.0, ge=0, description="How long a batch waits for healthy sinks before commit")
    alerts_file_max_bytes: int = Field(50_000_000, ge=0, description="Rotate the JSONL file at this size (0 = never)")
    alerts_file_backups: int = Field(5, ge=0, description="Rotated JSONL files kept")
    sink_syslog_host: str = Field("127.0.0.1", description="Syslog receiver host")
    sink_syslog_port: int = Field(514, ge=1, description="Syslog receiver port")
    sink_syslog_protocol: str = Field("udp", description="udp, tcp (RFC 6587 octet counting) or tls")
    sink_syslog_format: str = Field("cef", description="Syslog payload: cef or json")
    sink_syslog_ca_file: str = Field("", description="CA bundle to verify the syslog TLS server (empty = system)")
    sink_syslog_cert_file: str = Field("", description="Client certificate for syslog TLS (optional)")
    sink_syslog_key_file: str = Field("", description="Client key for syslog TLS (optional)")
    sink_hec_url: str = Field("", description="Splunk HEC base URL, e.g. https://splunk:8088")
    sink_hec_token: SecretStr = Field(SecretStr(""), description="Splunk HEC token")
    sink_hec_token_file: str = Field("", description="File holding the Splunk HEC token (wins over the token)")
    sink_hec_index: str = Field("", description="Splunk index (empty = the token's default)")
    sink_elastic_url: str = Field("", description="Elasticsearch/OpenSearch base URL")
    sink_elastic_index: str = Field("flowsentinel-alerts", description="Index the alerts go to")
    sink_elastic_username: str = Field("", description="Basic-auth user (empty = no auth)")
    sink_elastic_password: SecretStr = Field(SecretStr(""), description="Basic-auth password")
    sink_elastic_password_file: str = Field("", description="File holding the basic-auth password")
    sink_webhook_url: SecretStr = Field(SecretStr(""), description="Webhook URL (a secret: Slack URLs carry the token)")
    sink_webhook_url_file: str = Field("", description="File holding the webhook URL")
    sink_webhook_slack: bool = Field(False, description='Post Slack-compatible {"text": ...} instead of the alert JSON')
    sink_http_ca_file: str = Field("", description="CA bundle for the HTTPS sinks (empty = system)")
    sink_http_timeout_s: float = Field(10.0, gt=0, description="Timeout of one HTTP sink request")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{ENV_PREFIX}CONFIG names {config_file}, which does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        sources.append(RunningStackSource(settings_cls))
        return tuple(sources)

    def topic(self, name: str) -> str:
        """Topic name in this namespace: flows, host-windows, scores, anomalies, alerts, <x>.dlq."""
        return f"{self.namespace}{name}"

    def group(self, service: str) -> str:
        return f"{self.namespace}flowsentinel-{service}"

    def key(self, *parts: str | int) -> str:
        """Redis key in this namespace."""
        return ":".join([f"{self.namespace}fs", *map(str, parts)])

    def all_topics(self) -> list[str]:
        base = ["flows", "host-windows", "scores", "anomalies", "alerts"]
        by_dst = [ROLE_TOPICS["dst"]]  # the collector's copy of flows keyed by destination, for dst windows
        return [self.topic(t) for t in base + by_dst] + [self.topic(f"{t}.dlq") for t in base]

    def roles(self) -> list[str]:
        return self.window_roles.split(",")


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


def to_env(settings: Settings) -> dict[str, str]:
    """The FLOWSENTINEL_* variables that give a child process exactly these settings."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
