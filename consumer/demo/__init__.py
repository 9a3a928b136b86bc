"""``sqla-audit demo``: a small shop, three users, their changes, and each record's history.

The demo is the shortest path from nothing to the answer the project exists for -- "who
changed this record, when, and what exactly changed?" -- using the real pieces end to end:
the capture library installed on a session factory (:mod:`sqla_audit`), a transport, the
consumer's decoder and differ, an audit store and the query side.

* :mod:`consumer.demo.models` -- the application: customers, products, orders;
* :mod:`consumer.demo.scenario` -- the scripted requests of three users, including a bulk
  price change and a request that is rolled back, with the history each record must have;
* :mod:`consumer.demo.runner` -- wiring: embedded defaults (the outbox table in a SQLite
  application database, consumed directly into a SQLite audit store), or SNS/SQS and
  Cassandra when configured; then the history tables and a check against the scenario.

Only the core dependencies (SQLAlchemy, contextvars-extras) are needed on the default path;
boto3 and cassandra-driver are imported only when SNS/SQS or Cassandra are configured.
"""
