"""The systemd user unit for runforged (``runforgectl daemon install-service`` writes it)."""

# Type=notify: runforged sends READY=1 once its sockets are bound, WATCHDOG=1 every
# WatchdogSec/2, STOPPING=1 when it begins to stop.
# KillMode=process: systemd signals runforged only, never the per-run monitors that share
# its cgroup, so a crash (Restart=on-failure) or `systemctl --user restart` leaves every
# run to its monitor and the new daemon re-attaches. On SIGTERM runforged asks systemd
# which job stops it: a restart keeps the runs; a plain `systemctl --user stop` cancels
# every run with its grace window (SIGTERM to each trainer first, never to its
# data-loader workers at the same moment) and waits for them before it exits.
# TimeoutStopSec must exceed the longest cancel grace in use (default 5 s) plus the
# runner's flush; 90 s leaves room for a generous cancelGraceSeconds.
UNIT_TEMPLATE = """\
[Unit]
Description=RunForge daemon (owns this user's ML training runs)

[Service]
Type=notify
NotifyAccess=main
ExecStart=@RUNFORGED@ --log-format json
Restart=on-failure
RestartSec=2
WatchdogSec=30
TimeoutStopSec=90
KillMode=process
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=default.target
"""
