"""``sqla-audit ui``: a read-only web viewer of the audit trail (the ``ui`` extra).

:func:`audit_app` is the ASGI application (Starlette, server-rendered Jinja2 pages);
:mod:`consumer.commands.ui` serves it with uvicorn. See docs/viewer.md.
"""

from consumer.ui.app import audit_app
from consumer.ui.auth import Credentials

__all__ = ["Credentials", "audit_app"]
