"""Transparent interception: iptables sends a workload's TCP through its proxy.

Place in the flow: before the proxy serves its first request, the launcher installs
REDIRECT rules in the workload's network namespace. The app's outbound TCP then lands on
the proxy's outbound listener (15001), connections to the app's service ports land on the
inbound listener (15006), and the proxy asks the kernel where each one was going.

    rules.py     pure: InterceptConfig -> iptables-restore text (install, replace, remove)
    iptables.py  I/O: privileges, backend (nft / legacy), apply inside a namespace, dump
    origdst.py   SO_ORIGINAL_DST: the destination the app meant, for a redirected socket

Chains are named after Istio's (ISTIO_OUTPUT -> MESH_OUTPUT, ...); docs/interception.md
shows the rules and why each exception exists. Only our own chains and the jumps into
them are ever written or deleted: Docker's chains and everyone else's rules stay as found.
"""
