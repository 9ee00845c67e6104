"""Where the tests find real data: the bundled sample always, ../shared when it is beside the repo."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "iot23"
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

# Tests over the larger datasets beside the repo: they run where ../shared exists (CI has it) and are
# skipped with this one line where it does not (a user's fresh clone).
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} absent: shared-data test skipped")
