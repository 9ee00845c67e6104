"""Redis clients from settings (the URL may carry a password: it is never logged)."""

from __future__ import annotations

import redis

from services.common.settings import Settings


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url.get_secret_value())
