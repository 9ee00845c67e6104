"""Fixtures shared by the suite: a dedicated embedded stack per test session, per-test settings in a
namespace of their own, and `flowsentinel` sub-commands run as processes with those settings.

Tests that use the stack (directly or through `settings`) are marked `integration` automatically. They
fail, never skip, when the broker or Redis cannot start: integration tests run against real parts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from services import runner
from services.common.kafka import ensure_topics
from services.common.redis_client import sync_redis
from services.common.settings import ENV_PREFIX, Settings, to_env
from services.common.stack import StackError, StackInfo, free_port, start_stack, stop_stack

SERVICE_LOGS = pytest.StashKey[list[Path]]()
LOG_TAIL_LINES = 60

RunService = Callable[..., contextlib.AbstractContextManager[subprocess.Popen[bytes]]]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report ends with the tail of each service log it produced (see run_service)."""
    report = yield
    if report.failed:
        for log in item.stash.get(SERVICE_LOGS, []):
            report.sections.append((f"service log {log} (last {LOG_TAIL_LINES} lines)", _tail(log)))
    return report


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError as exc:
        return f"(unreadable: {exc})"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A Tansu broker on a free port for this session only, and the Redis of FLOWSENTINEL_REDIS_URL (or the
    default), started when none answers. Stopped at the end of the session."""
    base = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        # Explicit, so that a stack.json of `make stack-up` in the working folder is not picked up instead.
        redis_url=os.environ.get(f"{ENV_PREFIX}REDIS_URL") or Settings.model_fields["redis_url"].default,
        run_dir=tmp_path_factory.mktemp("stack"),
    )
    try:
        info = start_stack(base, timeout=60.0)
    except StackError as exc:
        pytest.fail(f"the test stack (broker and Redis) could not start: {exc}", pytrace=False)
    try:
        yield info
    finally:
        stop_stack(base)


@pytest.fixture
def settings(stack: StackInfo, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: the session's stack, its own namespace (topics created), run folder and
    alerts file. Its Redis keys are deleted afterwards."""
    test_settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        run_dir=tmp_path / "run",
        namespace=f"t{uuid.uuid4().hex[:8]}-",
        alerts_file=tmp_path / "alerts.jsonl",
    )
    ensure_topics(test_settings)
    yield test_settings
    _delete_keys(test_settings)


def _delete_keys(settings: Settings) -> None:
    client = sync_redis(settings)
    try:
        keys = list(client.scan_iter(match=f"{settings.namespace}fs:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def _service_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **to_env(settings), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def service_env() -> Callable[[Settings], dict[str, str]]:
    """`service_env(settings)`: the environment that gives a child process exactly these settings."""
    return _service_env


@pytest.fixture
def run_service(request: pytest.FixtureRequest, tmp_path: Path) -> RunService:
    """`with run_service(settings, "featurizer", *args) as proc:` runs `flowsentinel featurizer *args` as a
    process with the test's settings; on exit it is terminated (killed if it lingers). Its output goes to
    <tmp_path>/services/<command>.log, whose tail is added to the report when the test fails."""
    log_dir = tmp_path / "services"
    logs = request.node.stash.setdefault(SERVICE_LOGS, [])

    @contextlib.contextmanager
    def run(settings: Settings, command: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        proc = runner.start_service(settings, command, *args, log_dir=log_dir)
        log = log_dir / f"{command}.log"
        if log not in logs:
            logs.append(log)
        try:
            yield proc
        finally:
            runner.stop_process(proc)

    return run


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's models (autoencoder and LSTM of each window role: autoencoder, lstm, autoencoder-dst,
    lstm-dst), trained once per session on the benign flows of the bundled training captures (never on the
    captures the end-to-end tests replay)."""
    from services.demo import TRAIN_CAPTURES, sample_files
    from training.train_cli import train_and_export

    out = tmp_path_factory.mktemp("models")
    train_and_export(sample_files(TRAIN_CAPTURES), out, Settings())
    return out
