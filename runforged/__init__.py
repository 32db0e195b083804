"""runforged: the per-user daemon that owns training runs."""

__version__ = "0.1.0"
