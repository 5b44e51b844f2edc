"""Unit tests: the pure core, the contract, the CLI's parsing, packaging and the layers."""
