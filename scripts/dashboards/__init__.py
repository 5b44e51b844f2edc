"""The five fusionrack dashboards, one module each, on the shared helpers of `common`."""

from .controller import controller
from .dcgm import dcgm
from .links import links
from .partition import partition
from .rack_overview import rack_overview

__all__ = ["controller", "dcgm", "links", "partition", "rack_overview"]
