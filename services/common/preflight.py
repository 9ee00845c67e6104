"""Start-up check every service runs first: are the broker and Redis there? One clear line if not,
instead of a client library's traceback minutes later."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.common.stack import mask_url


class PreflightError(RuntimeError):
    """A dependency the service needs does not answer."""


def check(settings: Settings, redis: bool = True, broker: bool = True, timeout: float = 10.0) -> None:
    if redis:
        url = settings.redis_url.get_secret_value()
        try:
            sync_redis(settings).ping()
        except Exception as exc:  # any client error means the same thing to an operator here
            raise PreflightError(f"Redis at {mask_url(url)} does not answer: {exc}") from None
    if broker:
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout)
        except Exception as exc:
            raise PreflightError(
                f"Kafka broker at {settings.kafka_bootstrap} does not answer within {timeout:.0f}s: {exc}"
            ) from None
