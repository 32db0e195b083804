"""Request handlers, one function per request, by area; ``runforged.dispatch`` routes each
request type to its handler."""
