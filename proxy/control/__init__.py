"""The proxy's side of the control plane: join, renewal, the config stream, ACK/NACK, heartbeats,
and the app-health probe whose verdict the heartbeat carries (apphealth.py)."""
