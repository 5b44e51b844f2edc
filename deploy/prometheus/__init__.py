"""Prometheus configuration and rules for an emulated rack. A package only so that installs
carry the YAML files: `fusionctl rack up --prometheus` renders `prometheus.yml` into the rack's
state directory and points it at `rules/*.yml` here."""
