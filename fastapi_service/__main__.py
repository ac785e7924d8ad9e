"""``python -m fastapi_service`` (the image's command) or ``recsys-api``: run the service."""

from __future__ import annotations

import asyncio
import logging
import sys
from functools import partial
from typing import cast

import uvicorn

from fastapi_service.server import HeaderTimeoutProtocol
from fastapi_service.settings import ServiceSettings
from recsys.exceptions import ConfigurationError

log = logging.getLogger("fastapi_service")


def main() -> None:
    """Start uvicorn with host, port, workers, connection limits and logging from the settings.

    An invalid experiments file stops the start with its message (file, experiment, field)
    and exit status 2, before uvicorn would print a traceback for it.
    """
    settings = ServiceSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.experiments_file is not None:
        from fastapi_service.model_manager import check_servable
        from recsys.abtest import load_experiments

        try:
            check_servable(settings, load_experiments(settings.experiments_file))
        except ConfigurationError as exc:
            log.error("invalid A/B experiments, not starting:\n%s", exc)
            sys.exit(2)
    uvicorn.run(
        "fastapi_service.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.limit_concurrency,
        # uvicorn calls `http` like its protocol classes; a partial of a module-level class
        # pickles into the worker processes (RECSYS_WORKERS > 1)
        http=cast(
            "type[asyncio.Protocol]",
            partial(HeaderTimeoutProtocol, header_timeout_s=settings.header_timeout_s),
        ),
    )


if __name__ == "__main__":
    main()
