"""fusionrack: an emulated hardware control plane for NVLink Fusion racks."""

__version__ = "0.1.0"
