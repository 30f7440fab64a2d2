"""phase-verify: verify Phase signed documents offline."""

__version__ = "0.1.0"
