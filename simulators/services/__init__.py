"""Private services for tests, benchmarks and the demo: Mosquitto, PostgreSQL+TimescaleDB, a test PKI."""

from simulators.services.mosquitto import MosquittoBroker
from simulators.services.net import free_port, wait_for_port
from simulators.services.postgres import PostgresCluster
from simulators.services.tls import TlsFiles, make_test_pki

__all__ = ["MosquittoBroker", "PostgresCluster", "TlsFiles", "free_port", "make_test_pki", "wait_for_port"]
