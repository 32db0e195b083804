"""RunForge's benchmark suite: the daemon measured side by side with circus and supervisor.

Run it with ``python -m benchmarks`` (``--quick`` for a smoke run); see BENCHMARKS.md.
"""
