"""Where the registry keeps the state its replicas share: files in MESH_HOME, or etcd.

Without `--store` the registry keeps today's files (registry/server/main.py, statefiles.py):
one process, nothing else to run. `--store etcd://host:2379[,host:2379...][/prefix]` puts
the config snapshots and their versions, the publisher election and the list of replicas
in etcd (docs/etcd.md), so that any number of registries can serve one mesh:

    spec.py      parse and check `--store` (a bad value changes nothing)
    etcd.py      a small client of etcd's v3 JSON gateway (/v3/kv, lease, watch) on aiohttp
    cluster.py   the registry's side: versions by transaction, election by lease, follow by watch
    sealed_ca.py one CA for every replica: its key in etcd, sealed with each replica's seal key

We speak etcd's own v3 API over HTTP (the grpc-gateway every etcd >= 3.4 serves on its
client port) with aiohttp, which the registry already has: no gRPC stack, no new dependency.
Consensus is etcd's; nothing here elects or orders by itself.
"""

from __future__ import annotations

from registry.store.spec import StoreError, StoreSpec, parse_store

__all__ = ["StoreError", "StoreSpec", "parse_store"]
