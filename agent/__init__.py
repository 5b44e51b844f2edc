"""Per-tray gRPC agents (compute and switch trays). They arrive with the agents issue."""
