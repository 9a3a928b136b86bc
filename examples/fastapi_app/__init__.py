"""A FastAPI application audited by sqla-audit; see :mod:`examples.fastapi_app.app`."""
