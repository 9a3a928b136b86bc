"""Sub-commands of the ``sqla-audit`` CLI, one module each (see :mod:`consumer.cli`)."""
