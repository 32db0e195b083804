"""Purpose-built trainers for RunForge's tests: one real program, switched by environment.

Run it the way the daemon runs a trainer, with ``tests/trainers`` on ``PYTHONPATH`` (or the
package linked into the workspace, which is the working directory)::

    python -u -m rf_test_trainer train --out <run dir> [--preset P] [--model M] [...]

Other arguments (``--device``, ``--name``, ``--seed``, ``--param``...) are accepted and
ignored. Standard library only, plus ``runforge_contract.atomicio`` (itself standard library
only) for the atomic writes. The run id is the basename of ``--out``; ``run_dir`` in events
and files is ``--out`` relative to the working directory (the workspace). The "model" is a
real, tiny one: a majority-class baseline over the CSV in ``RUNFORGE_DATASET`` (or over a
built-in two-class synthetic table when that is unset).

Every mode writes ``<run dir>/trainer.pid`` once its SIGTERM handling is in place, so a
test may signal the trainer as soon as that file exists. Events are JSON lines on stderr,
one ``write(2)`` each, valid against the ``events.v1`` format (plus ``run_failed``); if
stderr's reader goes away the trainer carries on without events.

``RF_TEST_MODE`` (default ``complete``):

``complete``
    run_start, dataset_loaded, train_started, ``RF_TEST_STEPS`` train_progress (one every
    ``RF_TEST_STEP_S`` seconds), train_finished, metrics_computed, artifacts_written;
    writes metrics.json, metrics.v1.json, model.pkl and run.json (run schema v0.3.6);
    exits 0. SIGTERM has its default effect (the trainer dies by the signal).
``graceful``
    ``complete``, slow by default. On SIGTERM: ``cancelling`` with ``seconds_remaining``
    at once and each second while it "flushes" for ``RF_TEST_FLUSH_S`` seconds, writes
    ``checkpoint.partial.json``, then the ``.cancelled`` marker atomically (step = the
    phase the signal arrived in; ``partial_artifacts``: every artifact written so far,
    checkpoint included, workspace-relative), then
    ``run_cancelled {graceful: true}``; exits 143. ``RF_TEST_HANDLER_DELAY_S``: seconds
    of start-up before its SIGTERM handler is installed and run_start announced (a slow
    interpreter start): a SIGTERM then has its default effect.
``ignore_sigterm``
    ``complete``, slow by default, with SIGTERM ignored: only SIGKILL stops it.
``grandchildren``
    Starts ``RF_TEST_GRANDCHILDREN`` (default 3) descendants that ignore SIGTERM, then runs
    like ``complete``, slow by default. Descendant 1 is a child in its own session
    (setsid); with 3 or more, descendant 2 is a child whose own child is descendant 3 (a
    grandchild); further ones are plain children. The descendants inherit stdout and
    stderr (as data-loader workers do) and sleep; they exit by themselves after 10
    minutes so that a broken test cannot leak them for ever. Once all are ready their
    pids are written atomically to ``<run dir>/tree.json``: ``{"trainer": pid,
    "descendants": [{"pid", "ppid", "role"}]}``, role one of ``own_session``,
    ``parent``, ``grandchild``, ``child``. The trainer ignores SIGTERM, unless
    ``RF_TEST_TRAINER_TERM=exit``: then it exits 143 at once, leaving its descendants.
``marker_no_stderr``
    Right after run_start, stderr (fd 2) is pointed at /dev/null, so the reader sees EOF
    while the trainer keeps running (slow by default). On SIGTERM it writes the marker as
    ``graceful`` does (no events, nobody would read them) and exits 143.
``marker_fails_event``
    ``graceful``, except that the marker cannot be written: a directory sits where the
    marker file goes, so the atomic rename fails (a log line on stderr says so). It still
    emits ``run_cancelled {graceful: true}`` and exits 143.
``finish_on_cancel``
    Slow ``complete``; on SIGTERM it skips the remaining steps and finishes the run
    (metrics, model, run.json, artifacts_written), then exits ``RF_TEST_FINISH_EXIT``
    (default 0; e.g. 143 for a runner that finished and was then cancelled in shutdown).
``fail``
    run_start, dataset_loaded, train_started, then ``run_failed`` with
    ``error: {code: "TRAINING_FAILED", message}`` and ``step: "training"``; exits 1.
``exit0_no_runjson``
    ``complete`` up to metrics_computed (metrics files written), then exits 0 without
    model.pkl, run.json or artifacts_written.
``flood``
    run_start, dataset_loaded, train_started, then ``RF_TEST_EVENTS`` (default 1000)
    train_progress as fast as possible, or ``RF_TEST_RATE`` per second when set. Each
    carries its sequence number in ``epoch`` (0, 1, 2...; ``total_epochs`` =
    ``RF_TEST_EVENTS``) and its write time in ``timestamp`` (UTC, microseconds). Then
    completes like ``complete``.
``garbage``
    ``complete``, with these seven lines written one after each valid event from
    run_start on (the rest after the last train_progress), in this order: a plain text
    line (a log line, not an event); truncated JSON; a JSON object without ``event``; an
    unknown event type; a ``train_progress`` with wrong field types; a JSON array; a
    1 MiB line (a ``train_progress`` carrying a 1 MiB extra field). Six invalid event
    lines in all; every other line is a valid event.
``crash_midwrite``
    ``complete`` up to metrics_computed, then writes the first half of run.json with a
    plain (non-atomic) write, fsyncs it, and SIGKILLs itself: a torn run.json on disk, no
    artifacts_written, exit status -9.
``sigterm_probe``
    ``graceful``, and the SIGTERM handler first writes ``<run dir>/sigterm_received``:
    ``{"monotonic_ns": ..., "time_ns": ...}`` read the moment the signal was handled
    (CLOCK_MONOTONIC is system-wide, so a benchmark can compare it with its own clock).

Hostile modes (``hostile.py``: trusted code attacking the daemon through its run folder):

``swap_folder``
    ``complete``, then renames the run folder to ``<run id>.moved`` and puts a symlink to
    ``RF_TEST_OUTSIDE`` in its place; exits 0.
``hostile_run_json``
    ``complete``, with the JSON object ``RF_TEST_RUN_JSON_PATCH`` merged into run.json.
``metrics_symlink``
    ``complete``, then replaces metrics.json by a symlink to
    ``$RF_TEST_OUTSIDE/metrics.json``.
``hostile_marker``
    Slow ``complete``; on SIGTERM writes ``checkpoint.partial.json`` and a ``.cancelled``
    marker whose reason holds escape and NUL characters and whose ``partial_artifacts``
    hold the honest checkpoint beside ``..``, absolute and NUL-bearing paths; emits
    ``run_cancelled {graceful: true}`` and exits 143.

Output and process faults (``faults.py``):

``codec_garbage``
    run_start, dataset_loaded, train_started, then nine event lines no codec of the
    daemon can carry, in this order: ``epoch`` 10**30; ``epoch`` -2**63-1; a ``pad`` nested
    5,000 levels deep; one nested 100 levels deep; ``loss`` NaN; ``loss`` Infinity;
    ``loss`` 1e400; a lone surrogate escape ``"\\ud800"``; bytes that are not UTF-8.
    Then one train_progress and a normal completion (exit 0).
``flood_stdout``
    run_start, dataset_loaded, train_started, then ``RF_TEST_FLOOD_BYTES`` (default 50 MB)
    of 100-byte stdout lines as fast as possible, with one 3 MiB line half-way; then a
    normal completion.
``double_fork``
    run_start, dataset_loaded; a child forks a grandchild into its own session (it ignores
    SIGTERM, keeps stdout/stderr open, sleeps 10 minutes) and exits at once, so the
    grandchild's parent is gone; its pid goes to ``tree.json`` (``{"trainer", "descendants":
    [{"pid", "role": "escaped"}]}``); then a normal completion (``RF_TEST_STEPS`` steps of
    ``RF_TEST_STEP_S``).

Any ``--param RF_TEST_<NAME>=<value>`` sets that variable for this run only (the chaos
command mixes modes in one daemon this way).

Other environment variables: ``RF_TEST_STEPS`` (default 3, or 600 for the slow modes),
``RF_TEST_STEP_S`` (default 0, or 0.1 for the slow modes), ``RF_TEST_FLUSH_S`` (default 1).

Exit statuses: 0 finished, 1 ``fail``, 2 bad usage (unknown mode, missing ``--out``), 143
cancelled (or ``RF_TEST_TRAINER_TERM=exit``), -9 ``crash_midwrite``, -15 a SIGTERM in a
mode that keeps the default disposition.
"""
