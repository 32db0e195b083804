#!/usr/bin/env bash
# Run "$@" beside a real systemd user manager, in the private mount and PID namespaces
# this script is started in (unshare --mount --pid --fork --mount-proc): a cgroup2
# hierarchy, /run/systemd/system (what systemd checks for "booted with systemd") and
# /run/user on tmpfs, all private, so the machine's own /sys and /run are untouched. When
# the command ends, this script (the namespace's PID 1) exits and the kernel kills
# everything left in the namespace.
#
# Exit 3, with the reason on stderr, when this machine cannot host a user manager.
set -u
HOME_DIR=$1; shift
cannot() { echo "user_manager.sh: $*" >&2; exit 3; }
[ -x /lib/systemd/systemd ] || cannot "no /lib/systemd/systemd"
mount -t tmpfs tmpfs /sys/fs/cgroup 2>/dev/null || cannot "cannot mount a private /sys/fs/cgroup"
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || cannot "cannot mount cgroup2"
service_cgroup=/sys/fs/cgroup/user.slice/user-$(id -u).slice/user@$(id -u).service
mkdir -p "$service_cgroup" && echo $$ > "$service_cgroup/cgroup.procs" || cannot "cannot enter a cgroup"
mkdir -p /run/systemd /run/user
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system || cannot "cannot mount /run/systemd"
mount -t tmpfs tmpfs /run/user || cannot "cannot mount /run/user"
export XDG_RUNTIME_DIR=/run/user/$(id -u)
mkdir -m 700 "$XDG_RUNTIME_DIR"
export HOME=$HOME_DIR
unset XDG_CONFIG_HOME XDG_STATE_HOME XDG_DATA_HOME RUNFORGE_RUNTIME_DIR RUNFORGE_STATE_DIR RUNFORGE_CONFIG_DIR
/lib/systemd/systemd --user > "$HOME/systemd.log" 2>&1 &
for _ in $(seq 1 100); do
    state=$(systemctl --user is-system-running 2>/dev/null)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
case "$state" in running|degraded) ;; *) cannot "systemd --user did not come up ($state): $(tail -3 "$HOME/systemd.log")" ;; esac
"$@"
