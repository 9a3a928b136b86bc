"""Examples of applications audited by sqla-audit (see README.md in this directory)."""
