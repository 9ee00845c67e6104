"""Where the tests find real data: the bundled sample always, ../shared when it is beside the repo."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "iot23"
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
