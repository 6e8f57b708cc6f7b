"""meshctl: the command line and the launchers.

The CLI (`meshctl.cli`) only parses arguments and calls library code: the registry
(`registry/`, the control plane), the proxy (`proxy/`, the data plane) and the launchers
that put a proxy beside each workload (`meshctl.launch`). Shared plumbing that every
process needs (state directory, atomic writes, task spawning) lives here too.
"""

__version__ = "0.1.0"
