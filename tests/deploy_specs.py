"""What a container of each FlowSentinel service is given by deploy/: its arguments to `flowsentinel` and its
environment, read from the rendered compose file and Kustomize overlays plus the image's own ENV, and the
translation of that configuration from container paths and in-cluster host names to this machine.

The deploy tools (docker-compose, kubectl) are found or installed here, so CI on a fresh machine has them.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
OVERLAYS = {"dev": DEPLOY / "k8s" / "overlays" / "dev", "prod": DEPLOY / "k8s" / "overlays" / "prod"}
DOCKERFILE = REPO / "Dockerfile"
IMAGE = "flowsentinel"
# The image's entry point; a compose service or Deployment that replaces it is not a plain service run.
ENTRYPOINT = "flowsentinel"


class ToolMissing(RuntimeError):
    pass


def venv_tool(name: str) -> str:
    """A tool installed by a PyPI package of the dev extras (kubectl, hadolint, kubernetes-validate)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise ToolMissing(f"{name} is not installed: `make venv` installs the dev extras of pyproject.toml")
    return found


def docker_compose() -> str:
    """Debian's docker-compose, installed with apt-get (as root) when missing."""
    found = shutil.which("docker-compose")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolMissing("docker-compose is not installed (Debian/Ubuntu: sudo apt-get install docker-compose)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise ToolMissing(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    found = shutil.which("docker-compose")
    if not found:
        raise ToolMissing("the docker-compose package is installed but docker-compose is not on PATH")
    return found


def compose_config() -> dict[str, Any]:
    """deploy/docker-compose.yml as docker-compose itself resolves it (anchors, merges, defaults)."""
    return copy.deepcopy(_compose_config())


@functools.cache
def _compose_config() -> dict[str, Any]:
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, cwd=DEPLOY
    )
    if done.returncode:
        raise ValueError(f"docker-compose config rejected {COMPOSE_FILE}:\n{done.stderr}")
    return yaml.safe_load(done.stdout)


def render_overlay(overlay: str) -> list[dict[str, Any]]:
    """Every object `kubectl kustomize` renders for an overlay."""
    return copy.deepcopy(_render_overlay(overlay))


@functools.cache
def _render_overlay(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([venv_tool("kubectl"), "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True)
    if done.returncode:
        raise ValueError(f"kubectl kustomize {OVERLAYS[overlay]} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions as (INSTRUCTION, arguments), continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        logical += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        instruction, _, args = logical.partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            name = args.split(" AS ")[-1].strip() if " AS " in args else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        elif current is not None:
            current.append((instruction.upper(), args.strip()))
    return stages


def image_env() -> dict[str, str]:
    """The ENV of the image's final stage: every container starts with it."""
    final = list(dockerfile_stages().values())[-1]
    env: dict[str, str] = {}
    for instruction, args in final:
        if instruction == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value.strip('"')
    return env


@dataclass(frozen=True)
class ContainerSpec:
    source: str  # "compose", "k8s/dev", ...
    service: str
    args: tuple[str, ...]  # after the `flowsentinel` entry point
    env: dict[str, str]


def compose_specs(config: dict[str, Any]) -> dict[str, ContainerSpec]:
    """The services of the compose file that run the FlowSentinel image with its own entry point."""
    base = image_env()
    specs = {}
    for name, svc in config["services"].items():
        if not str(svc.get("image", "")).startswith(IMAGE) or "entrypoint" in svc:
            continue
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        specs[name] = ContainerSpec("compose", name, tuple(svc.get("command") or ()), {**base, **env})
    return specs


def _image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def k8s_specs(overlay: str, docs: list[dict[str, Any]]) -> dict[str, ContainerSpec]:
    """The Deployments of a rendered overlay that run the FlowSentinel image: args, env and envFrom resolved
    against the overlay's own ConfigMaps and Secrets. A Secret the overlay only references (created by the
    cluster's operator) leaves its variables out: the caller must supply them."""
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    base = image_env()
    specs = {}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if _image_name(container["image"]) != IMAGE or container.get("command"):
                continue
            env = dict(base)
            for source in container.get("envFrom", []):
                env.update(_config_map(objects, source["configMapRef"]["name"]))
            for var in container.get("env", []):
                value = _env_value(objects, var)
                if value is not None:
                    env[var["name"]] = value
            name = doc["metadata"]["name"]
            specs[name] = ContainerSpec(f"k8s/{overlay}", name, tuple(container.get("args", ())), env)
    return specs


def _config_map(objects: dict[tuple[str, str], Any], name: str) -> dict[str, str]:
    if ("ConfigMap", name) not in objects:
        raise KeyError(f"envFrom names ConfigMap {name}, which the overlay does not render")
    return dict(objects[("ConfigMap", name)].get("data", {}))


def _env_value(objects: dict[tuple[str, str], Any], var: dict[str, Any]) -> str | None:
    if "value" in var:
        return str(var["value"])
    ref = var["valueFrom"]
    if "configMapKeyRef" in ref:
        return _config_map(objects, ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
    secret = objects.get(("Secret", ref["secretKeyRef"]["name"]))
    if secret is None:
        return None
    key = ref["secretKeyRef"]["key"]
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def localize(
    spec: ContainerSpec, substitute: dict[str, str], supply: dict[str, str], paths: dict[str, Path]
) -> ContainerSpec:
    """The spec with in-cluster addresses replaced by this machine's (`substitute`: whole values, by variable,
    where the spec sets them), `supply` set whatever the spec says (what a container gets from outside the
    manifests, or what must differ between processes on one host), and container paths mapped to host
    paths by prefix in env and args. Any other absolute path left over is an error: it would point into the
    image or a volume that is not here."""

    def path(value: str) -> str:
        for prefix, host in paths.items():
            if value == prefix or value.startswith(prefix + "/"):
                return str(host) + value[len(prefix) :]
        if value.startswith("/"):
            raise ValueError(f"{spec.source} {spec.service}: container path {value} has no host equivalent")
        return value

    env = {k: substitute.get(k) or (path(v) if k.startswith("FLOWSENTINEL_") else v) for k, v in spec.env.items()}
    env.update(supply)
    return replace(spec, env=env, args=tuple(path(a) if a.startswith("/") else a for a in spec.args))
