"""The embedded stack: pure helpers, and up/status/down against a real Tansu broker and real Redis.

Each integration test runs a stack of its own (own run folder, own free broker port) beside the session's
stack, and borrows the session's Redis as "a Redis the stack did not start".
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from services.common.settings import ENV_PREFIX, Settings
from services.common.stack import (
    STACK_FILE,
    ManagedProcess,
    StackError,
    StackInfo,
    bootstrap_port,
    free_port,
    is_running,
    mask_url,
    port_is_free,
    probe_broker,
    probe_redis,
    process_identity,
    read_stack,
    stack_status,
    start_stack,
    stop_stack,
)

# Pure helpers


def test_free_port_can_be_bound() -> None:
    assert port_is_free(free_port())


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_is_free(s.getsockname()[1])


@pytest.mark.parametrize(
    ("bootstrap", "port"),
    [("127.0.0.1:9093", 9093), ("a:9101,b:9102", 9101), ("localhost", 9092), ("PLAINTEXT://h:9094", 9094)],
)
def test_bootstrap_port_is_the_first_servers(bootstrap: str, port: int) -> None:
    assert bootstrap_port(bootstrap) == port


def test_bootstrap_without_a_readable_port_is_an_error() -> None:
    with pytest.raises(StackError, match="kafka_bootstrap"):
        bootstrap_port("127.0.0.1:kafka")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://ops:s3cret@cache:6380/2", "redis://ops:***@cache:6380/2"),
        ("redis://cache:6379/0?password=s3cret&ssl=no", "redis://cache:6379/0?password=***&ssl=no"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _managed(pid: int, log: str = "/dev/null") -> ManagedProcess:
    identity = process_identity(pid)
    assert identity is not None
    return ManagedProcess(name="broker", pid=pid, start_ticks=identity[0], exe=identity[1], port=0, log=log)


def test_a_process_is_ours_only_with_the_recorded_start_time_and_executable(
    sleeper: subprocess.Popen[bytes],
) -> None:
    ours = _managed(sleeper.pid)
    assert is_running(ours)
    assert not is_running(replace(ours, start_ticks=ours.start_ticks + 1))  # same pid, reused by another process
    assert not is_running(replace(ours, exe="/usr/bin/other"))
    sleeper.kill()
    sleeper.wait()
    assert not is_running(ours)


def test_a_zombie_is_not_running() -> None:
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert process_identity(proc.pid) is None
    finally:
        proc.wait()


def test_down_leaves_alone_a_recorded_pid_that_now_belongs_to_another_process(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    stranger = replace(_managed(sleeper.pid), start_ticks=0)
    record = StackInfo(tmp_path, "127.0.0.1:1", Settings().redis_url, stranger, None, "2026-01-01T00:00:00+00:00")
    (tmp_path / STACK_FILE).write_text(json.dumps(record.to_record()))
    stopped = stop_stack(Settings(run_dir=tmp_path))
    assert [s.outcome for s in stopped] == ["already gone"]
    assert sleeper.poll() is None
    assert not (tmp_path / STACK_FILE).exists()


def test_a_corrupt_record_is_an_error_not_an_absent_stack(tmp_path: Path) -> None:
    (tmp_path / STACK_FILE).write_text("{not json")
    with pytest.raises(StackError, match="not a readable stack record"):
        read_stack(tmp_path)


# Against the real broker and Redis


def _own_stack_settings(tmp_path: Path, redis_url: str, broker_port: int | None = None) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{broker_port or free_port()}",
        redis_url=redis_url,
        run_dir=tmp_path / "run",
        partitions=1,
    )


@pytest.fixture
def own_stack(tmp_path: Path, stack: StackInfo) -> Iterator[Settings]:
    """Settings for a stack of the test's own that uses the session's Redis; stopped even if the test fails."""
    settings = _own_stack_settings(tmp_path, stack.redis_url.get_secret_value())
    yield settings
    stop_stack(settings)


@pytest.mark.integration
def test_up_status_up_down(own_stack: Settings, stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    info = start_stack(own_stack)
    assert not info.reused
    assert info.kafka_bootstrap == own_stack.kafka_bootstrap
    assert info.redis is None, "a Redis that answers is used, not started"
    record = own_stack.run_dir / STACK_FILE
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    monkeypatch.setenv(f"{ENV_PREFIX}RUN_DIR", str(own_stack.run_dir))
    monkeypatch.delenv(f"{ENV_PREFIX}KAFKA_BOOTSTRAP", raising=False)
    assert Settings().kafka_bootstrap == info.kafka_bootstrap, "services find the stack through its record"

    status = stack_status(own_stack)
    assert status.healthy, status
    assert status.running == {"broker": True}
    assert set(own_stack.all_topics()) <= set(_topics(info.kafka_bootstrap))

    again = start_stack(own_stack)
    assert again.reused
    assert again.broker == info.broker

    stopped = stop_stack(own_stack)
    assert [(s.process.pid, s.outcome) for s in stopped] == [(info.broker.pid, "stopped")]
    assert not Path(f"/proc/{info.broker.pid}").exists()
    assert not record.exists()
    assert probe_redis(stack.redis_url.get_secret_value()).ok, "the Redis the stack did not start still runs"
    assert not stack_status(own_stack).healthy


def _topics(bootstrap: str) -> list[str]:
    return list(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


@pytest.mark.integration
def test_a_taken_broker_port_moves_the_broker_and_says_so(tmp_path: Path, stack: StackInfo) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = _own_stack_settings(tmp_path, stack.redis_url.get_secret_value(), broker_port=port)
        try:
            info = start_stack(settings)
            assert info.broker.port != port
            assert any(f"port {port} is taken" in note for note in info.notes)
            assert probe_broker(info.kafka_bootstrap).ok
        finally:
            stop_stack(settings)


@pytest.mark.integration
def test_starts_and_stops_its_own_redis_when_none_answers(tmp_path: Path) -> None:
    port = free_port()
    settings = _own_stack_settings(tmp_path, f"redis://127.0.0.1:{port}/3")
    try:
        info = start_stack(settings)
        assert info.redis is not None and info.redis.port == port
        assert info.redis_url.get_secret_value() == f"redis://127.0.0.1:{port}/3"
        assert probe_redis(info.redis_url.get_secret_value()).ok
    finally:
        stopped = stop_stack(settings)
    assert sorted(s.process.name for s in stopped if s.outcome == "stopped") == ["broker", "redis"]
    assert not probe_redis(f"redis://127.0.0.1:{port}/3", timeout=0.5).ok


@pytest.mark.integration
def test_cli_up_status_down_masks_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        f"{ENV_PREFIX}RUN_DIR": str(tmp_path / "run"),
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        # Nothing answers here, so the stack starts its own Redis; the password must never be printed.
        f"{ENV_PREFIX}REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0",
        "COLUMNS": "200",
    }

    def cli(action: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "services.cli", "stack", action]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert env[f"{ENV_PREFIX}KAFKA_BOOTSTRAP"] in up.stdout
        assert "redis://:***@127.0.0.1" in up.stdout
        status = cli("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "stack down" in down.stdout
    assert cli("status").returncode == 1, "nothing answers once the stack is down"
    assert all("s3cret-pw" not in p.stdout + p.stderr for p in (up, status, down))
