"""A real local Ray head for the session, bound to 127.0.0.1 only, stopped at the end.

Started once (about 15 s, 1.5 GiB) by the first test that asks for it. Where the machine
allows a private mount namespace (root, or unprivileged user namespaces), the head runs in
one where ``head.unshared`` is an empty tmpfs: a workspace there is one the cluster cannot
see, as without the shared filesystem (else ``head.unshared`` is None). Without Ray
installed the tests skip, except in CI (``CI=true``), where a missing Ray is a failure:
``.ci/run`` installs the ``ray`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from benchmarks.ray_head import LocalRayHead, private_mounts_work, ray_command
from tests.harness import SESSION_MARKER_ENV, remove_tree, short_tempdir

RayHead = LocalRayHead


@pytest.fixture(scope="session")
def ray_head() -> Iterator[LocalRayHead]:
    if ray_command() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed; CI runs the Ray tests (pip install '.[ray]')")
        pytest.skip("Ray is not installed (pip install 'runforge[ray]')")
    temp_dir = short_tempdir()
    # Not marked as this session's: the per-test leak check must not take the head for a
    # leftover. Trainers it runs are marked (through rayEnvVars) and checked as usual.
    env = {k: v for k, v in os.environ.items() if k != SESSION_MARKER_ENV}
    unshared = temp_dir / "unshared"
    unshared.mkdir()
    head = LocalRayHead(
        temp_dir, env=env, unshared=unshared if private_mounts_work(unshared) else None
    )
    try:
        head.start()
        assert head.listening_hosts() == {"127.0.0.1"}, head.listening_hosts()
        yield head
    finally:
        head.stop()
        remove_tree(temp_dir)
