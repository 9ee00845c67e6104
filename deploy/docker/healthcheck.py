"""Container health check: exit 0 when the service's endpoint answers 200 on the given path (default /healthz).

Used by the image's HEALTHCHECK and by docker-compose; the image has no curl, and Python is already there.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    port = os.environ.get("FLOWSENTINEL_METRICS_PORT", "9100")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
