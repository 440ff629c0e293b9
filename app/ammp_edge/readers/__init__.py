"""Readers: one module per protocol. Each turns a device's compiled fields into values."""
