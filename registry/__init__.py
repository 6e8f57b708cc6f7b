"""The registry: the control plane, one per mesh.

    registry/
      config/       load and validate the config directory into an immutable snapshot
      ca/           the certificate authority: SPIFFE IDs, SVIDs from CSRs, join tokens
      server/       the HTTPS API (join, renew, config stream, catalog, admin) and the watcher
      store/        where the state lives: files in MESH_HOME, or etcd for several replicas

The files are the source of truth: the watcher turns each valid change into the next
snapshot version; an invalid change is rejected whole and the last good snapshot stays.
"""
