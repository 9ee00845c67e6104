"""One logging set-up for every service: timestamped lines on stderr, level from FLOWSENTINEL_LOG_LEVEL."""

from __future__ import annotations

import logging
import os


def setup(service: str) -> logging.Logger:
    level = os.environ.get("FLOWSENTINEL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(f"flowsentinel.{service}")
