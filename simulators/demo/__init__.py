"""``linli demo`` and ``linli bench e2e``: the whole pipeline on one machine.

The demo and the end-to-end benchmark run the edge agents, the ingest workers and the simulators
as **subprocesses** (``python -m edge``, ``python -m cloud``, ``python -m simulators``), so this
package imports neither `edge` nor `cloud`; the private Mosquitto and PostgreSQL come from
`simulators.services`. It needs the ``cloud`` and ``sim`` extras (psycopg, numpy, rich, psutil).

Modules: `children` (a supervised child process), `configs` (edge and cloud TOML files),
`pipeline` (brokers, database, ingest, agents, simulators under one folder), `app` (the demo's
live screen), `bench` (``linli bench e2e``), `cli` (``linli demo``).
"""
