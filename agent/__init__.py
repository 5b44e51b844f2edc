"""Per-tray gRPC agents: compute trays (`Tray`, `Memory`) and switch trays (`Tray`, `Switch`),
their /metrics and MQTT events. `fusion-agent` (`main`) runs them; `serving` starts them in code."""
