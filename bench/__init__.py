"""Benchmarks of sqla-audit: commit-path overhead, consumer throughput, diff cost, latency, memory.

They live outside the test suite on purpose: timings are noisy and machine-dependent, so they
are measured, printed and written down (``docs/benchmarks.md``), never asserted. Every part
runs its contenders side by side in one run, interleaved round-robin over the repetitions,
and reports medians and ratios measured together, so that background load slows every
contender alike instead of biasing one of them.

Run ``python -m bench all`` (or one part: ``p1``, ``p2``, ``p3``, ``p4``, ``memory``; and
``report`` to rewrite the document from the stored results). The services come from
``.services.env`` (``scripts/services up``).
"""
