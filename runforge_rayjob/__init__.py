"""The program a Ray job runs on the cluster for one RunForge run (standard library only).

RunForge submits ``python -m runforge_rayjob --run-dir DIR --nonce N`` as the job's
entrypoint, with this package, the runner and ``runforge_contract`` shipped to the cluster as
``py_modules``.
It is the trainer's parent on the cluster node, as the daemon is locally:

1. **Shared filesystem check.** It reads ``<run dir>/.executor/spec.json``, which the
   daemon wrote just before submitting, and compares its nonce with the one on its
   command line. No file, or another nonce, means the cluster does not see the
   workspace at the daemon's path: it prints one JSON line saying so (the daemon finds
   it in the job's log, its only channel then) and exits ``EXIT_NOT_SHARED`` without
   starting anything.
2. **Cancel before start.** A cancel request already in ``control.json`` (the run was
   cancelled while the job was pending for resources) ends it here: nothing is spawned.
3. **The trainer** is started in its own session with the spec's argv, working
   directory and environment (the runner packages that came with the job on its
   ``PYTHONPATH``), exactly as the local per-run monitor starts it: the spawn, the tree
   kill and the exit record are ``runforge_contract.trainer_parent``'s, shared by both.
   Its stdout and stderr lines are appended, tagged, to ``<run dir>/.executor/output``
   (one ``write`` per line) for the daemon to follow; this program's own records
   (spawned, SIGTERM sent, tree killed) go in the same stream.
4. **Cancel** is a request the daemon writes to ``control.json``: ``cancel`` sends
   SIGTERM to the trainer only (its workers must live until it has flushed); ``kill``
   (the daemon's deadline: the daemon keeps the grace, the countdown and the deadline,
   as for a local run) SIGKILLs the whole tree: this program is a child subreaper, so
   the tree is every process below it, double-forked workers included. The cancel also
   carries its deadline (UNIX time), which this program keeps too, so that the tree dies
   on time while no daemon is there to ask. SIGTERM to this program (Ray's ``stop_job``)
   is a cancel with the run's grace, kept here.
5. When the trainer has been reaped and its pipes drained, ``exit.json`` records its exit
   status atomically; that file is the daemon's signal that the stream is complete.

The stream's lines are ``<tag><payload>\\n``: tag ``1`` a stdout line, ``2`` a stderr line,
``C`` a JSON record of this program.
"""
