"""Request handlers, one function per request; importing this package registers them all."""

from runforged.handlers import daemon as daemon

__all__ = ["daemon"]
