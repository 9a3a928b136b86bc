"""A benchmark's own Cassandra keyspace: created with the audit schema, dropped at the end."""

from __future__ import annotations

from bench.common import cassandra_contact
from bench.cpu import cassandra_pid


class Keyspace:
    """A fresh keyspace with the audit schema, a session on it (``max_in_flight`` requests
    per connection) and the Cassandra server's process id (for its CPU time); ``close()``
    drops the keyspace."""

    def __init__(self, keyspace: str, max_in_flight: int) -> None:
        from consumer.config import CassandraConfig, CassandraSchemaConfig  # noqa: PLC0415
        from consumer.sinks.cassandra import apply_schema, connect  # noqa: PLC0415

        host, port = cassandra_contact()
        self.config = CassandraConfig(
            hosts=(host,),
            port=port,
            max_in_flight=max_in_flight,
            schema=CassandraSchemaConfig(keyspace=keyspace),
        )
        apply_schema(self.config)
        self.cluster = connect(self.config)
        self.session = self.cluster.connect()
        self.keyspace = keyspace
        self.server = cassandra_pid()

    def close(self) -> None:
        try:
            self.session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=120)
        finally:
            self.cluster.shutdown()


__all__ = ["Keyspace"]
