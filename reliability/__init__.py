"""The reliability suite, beside the benchmarks: fuzzers that attack a real daemon and a
real bridge with hostile input (``python -m reliability``), and report in RELIABILITY.md."""
