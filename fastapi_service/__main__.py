"""``python -m fastapi_service`` (the image's command) or ``recsys-api``: run the service."""

from __future__ import annotations

import logging

import uvicorn

from fastapi_service.settings import ServiceSettings


def main() -> None:
    """Start uvicorn with host, port, workers and logging from the ``RECSYS_*`` settings."""
    settings = ServiceSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        "fastapi_service.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
