"""The capture engine: layers and hooks, the method protocol and registry, and ``explain``."""
