"""A Flask application audited by sqla-audit; see :mod:`examples.flask_app.app`."""
