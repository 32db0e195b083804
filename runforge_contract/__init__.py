"""What the daemon, the client and the trainer share, in the standard library only.

- ``atomicio``: atomic file writes (temp file, fsync, rename, fsync the directory);
- ``layout``: where runs live in a workspace and the name of every file of a run folder;
- ``trainer_events``: the events a trainer writes to stderr, with their fields;
- ``run_ids``: what a run id looks like, and how a fresh one is made;
- ``timestamps``: the one timestamp format of every contract file;
- ``params``: the bundled runner's presets, model families, profiles and ``--param``
  table (the runner trains with it, the daemon checks a request against it);
- ``sample_data``: the bundled sample datasets (``runforgectl sample-data`` and the
  runner's ``sample-data`` command write them).

The daemon puts this package beside ``runforge_runner`` on a trainer's PYTHONPATH, so it
must import under any Python >= 3.10 with nothing but the standard library.
"""
