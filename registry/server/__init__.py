"""The registry process: config watcher, snapshot store, catalog and the HTTPS API.

watcher.py     config directory -> load_directory() -> SnapshotStore.publish() or reject
snapshots.py   immutable versioned snapshots; subscribers wake when a new one lands
catalog.py     services' endpoints, registered by launchers and proxies, expired by TTL
proxies.py     which config version each proxy runs (ACK) or refused (NACK)
api.py         join, renew, config stream, ACK, catalog, tokens, status, metrics
main.py        assembles the above into one process (`meshctl registry`)
"""
