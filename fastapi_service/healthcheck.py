"""``python -m fastapi_service.healthcheck``: exit 0 if /health/live answers (image HEALTHCHECK)."""

from __future__ import annotations

import sys
import urllib.request

from fastapi_service.settings import ServiceSettings


def main() -> int:
    """Probe the local service on the configured port; 0 = healthy, 1 = not."""
    port = ServiceSettings().port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as reply:
            return 0 if reply.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
