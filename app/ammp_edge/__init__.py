"""ammp-edge: edge data-logger appliance for energy systems."""

__version__ = "0.1.0"
