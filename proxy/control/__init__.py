"""The proxy's side of the control plane: join, renewal, the config stream, ACK/NACK, heartbeats."""
