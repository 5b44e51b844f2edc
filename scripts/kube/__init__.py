"""The Kubernetes manifests of deploy/kubernetes/: the objects (`objects`) and the directories
and kustomizations they are written to (`layout`)."""

from .layout import HEADER, SECRETS_DIR, common_files, fleet_files, rack_files, render_yaml
from .objects import RackSpec

__all__ = [
    "HEADER",
    "SECRETS_DIR",
    "RackSpec",
    "common_files",
    "fleet_files",
    "rack_files",
    "render_yaml",
]
