"""recsys recommendation service: a thin FastAPI shell over :mod:`recsys.serving`.

Run it with ``python -m fastapi_service`` (settings from ``RECSYS_*`` variables).
"""
