"""Prefect flows: the only package that imports Prefect. Stages know nothing of it.

Importing the package sets the defaults of some of Prefect's settings (a user's own setting
wins): before any module of it imports Prefect, which reads them then, and before
:mod:`flows.server` starts Prefect's temporary server, which reads them at its start.
"""

import os

# Read by Prefect when it is imported, and by its temporary server (a child process) at its
# start: set before either. A user's own setting wins.
ENV_DEFAULTS = {
    # the malmoi loggers' records reach the Prefect UI
    "PREFECT_LOGGING_EXTRA_LOGGERS": "malmoi",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # malmoi's log records outside a flow run (e.g. "SIGTERM: stopping" after the run crashed)
    # go to the console only, without Prefect's warning that they cannot reach the API.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Prefect's temporary server creates and migrates its SQLite database on its first start:
    # 35 s were measured on a fresh machine, beyond Prefect's default wait of 20 s ("Timed out
    # while attempting to connect to ephemeral Prefect API server").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # The temporary server registers Prefect's block types in its database at every start (on
    # a fresh database 0.9 s, else 0.35 s to find them registered): malmoi uses no blocks.
    # A `prefect server start` over the same database registers them at its own start.
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
}

for _key, _value in ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
