"""Rack manifest presets. A package only so that installs carry the YAML files:
`fusionctl manifest show NAME` finds `NAME.yaml` here."""
