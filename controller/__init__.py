"""The controller daemon, `fusion-controller`: desired state, fabric programming, events."""
