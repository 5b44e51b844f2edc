"""`fusionctl`, the command line: one module per noun (`main.py` lists them), the rack launcher
in `launcher/`. It reaches a running controller only through its gRPC client (`client.py`)."""
