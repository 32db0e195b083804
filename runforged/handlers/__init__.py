"""Request handlers, one function per request; importing this package registers them all."""

from runforged.handlers import daemon, observe, runs, trust

__all__ = ["daemon", "observe", "runs", "trust"]
