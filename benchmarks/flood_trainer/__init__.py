"""A trainer that writes ``train_progress`` events to stderr as fast as it can, for the
event relay benchmark (figure 6): lines are rendered from a template and written many
per ``write(2)``, so the trainer is never what limits the relay.

    python -m <this package> train --out RUN_DIR     # RF_BENCH_EVENTS events (default 100000)

Standard library only (it runs as a trainer, with the workspace as working directory).
Each batch of lines carries the time it was rendered in ``timestamp`` (UTC,
microseconds). It writes no model and no ``run.json``: the daemon classifies the run as
failed (training incomplete), which does not matter for what is measured.
"""
