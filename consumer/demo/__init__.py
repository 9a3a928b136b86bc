"""``sqla-audit demo``: two services, three users, their changes, each record's history and
the request view of one user action across both services.

The demo is the shortest path from nothing to the answer the project exists for -- "who
changed this record, when, and what exactly changed?" -- using the real pieces end to end:
the capture library installed on a session factory (:mod:`sqla_audit`), a transport, the
consumer's decoder and differ, an audit store and the query side.

* :mod:`consumer.demo.models` -- the applications: a shop (customers, products, orders) and
  a billing service (invoices), each with its own database;
* :mod:`consumer.demo.scenario` -- the scripted requests of three users, including a bulk
  price change, a request that is rolled back and an order the shop has billing invoice
  under the same request id, with the history each record must have;
* :mod:`consumer.demo.runner` -- wiring: embedded defaults (the outbox table in each
  service's SQLite database, consumed directly into a SQLite audit store), or SNS/SQS and
  Cassandra when configured; then the history tables, the request view and a check against
  the scenario.

Only the core dependencies (SQLAlchemy, contextvars-extras) are needed on the default path;
boto3 and cassandra-driver are imported only when SNS/SQS or Cassandra are configured.
"""
