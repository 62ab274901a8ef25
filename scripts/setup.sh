#!/usr/bin/env bash
# Prepares this machine for the testbed, idempotently: apt packages, .venv, OVS and Docker, images.
# Used by the Makefile (make setup/test/demo) and by the Vagrantfile's provisioner.
# Usage: scripts/setup.sh [all|packages|venv|services|images]...
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STATE=/var/lib/testbed
PACKAGES=(mininet openvswitch-switch iperf3 ethtool tcpdump debootstrap iproute2 iputils-ping
          python3 python3-venv python3-pip procps criu tshark vagrant ca-certificates
          clang libbpf-dev bpftool docker-registry openssh-server iptables)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root: run it as 'sudo make ...' (it installs packages and starts services)"

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

step_packages() {
    local want=("${PACKAGES[@]}")
    # An already installed Docker engine (docker-ce, docker.io) is used as it is.
    command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
    local missing
    missing=$(missing_packages "${want[@]}")
    if [ -z "$missing" ]; then say "packages: all present"; return; fi
    say "packages: installing" $missing
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    # The testbed runs its own registry processes inside emulated hosts (testbed/replication/registry.py);
    # the packaged service, when apt just started it, would listen on :5000 on every address.
    if grep -qx docker-registry <<<"$missing" && has_systemd; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
    # The cluster harness runs its own sshd in a namespace (testbed/cluster/harness.py); an sshd that
    # apt has just installed and started (so nobody was reaching this machine through it) is stopped.
    if grep -qx openssh-server <<<"$missing" && has_systemd; then
        systemctl disable --now ssh >/dev/null 2>&1 || true
    fi
}

step_venv() {
    local stamp="$VENV/.testbed-stamp" want
    want=$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
    if [ -x "$VENV/bin/testbed" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        say "venv: up to date ($VENV)"; return
    fi
    say "venv: creating $VENV from /usr/bin/python3 (sees the apt-installed Mininet)"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
    echo "$want" > "$stamp"
}

step_bpf() {  # the fail-safe NIC's tc-BPF program (testbed/failsafe/bpf/nic.bpf.c -> .build/bpf/nic.bpf.o)
    "$VENV/bin/python" -m testbed.failsafe.bpf.build >/dev/null \
        && say "bpf: NIC data path built" || say "bpf: not built (NICs with datapath auto use Python)"
}

has_systemd() { [ -d /run/systemd/system ]; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || die "$what did not answer within ${secs}s"
        sleep 0.2
    done
}

detached() {  # "$@" with only fds 0-2 open: a lock or pipe the caller holds must not live on in a daemon
    (
        for fd in $(ls "/proc/$BASHPID/fd"); do
            [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
        done
        exec "$@"
    )
}

step_ovs() {
    if ovs-vsctl --timeout=2 show >/dev/null 2>&1; then say "ovs: running"; return; fi
    say "ovs: starting ovsdb-server and ovs-vswitchd"
    if has_systemd; then
        systemctl start openvswitch-switch
    else
        # ovs-ctl replaces stale pid files itself; its ulimit/module warnings are harmless here.
        detached /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
    fi
    wait_for 30 "Open vSwitch" ovs-vsctl --timeout=2 show
}

docker_up() { docker version --format '{{.Server.Version}}' 2>/dev/null | grep -q .; }

step_docker() {
    if docker_up; then say "docker: running ($(docker version --format '{{.Server.Version}}'))"; return; fi
    say "docker: starting the engine"
    if has_systemd; then
        systemctl start docker
    else
        local pidfile=/var/run/docker.pid
        if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
        # The testbed needs none of Docker's own networking (containers use network_mode=none),
        # so the daemon it starts leaves iptables and bridges alone (see PLATFORM-NOTES).
        mkdir -p /var/log
        detached setsid --fork dockerd --iptables=false --bridge=none --experimental \
            >>/var/log/testbed-dockerd.log 2>&1 < /dev/null
    fi
    wait_for 60 "the Docker engine" docker_up
}

step_services() { step_ovs; step_docker; }

step_images() { "$VENV/bin/testbed" images build; }

mkdir -p "$STATE"
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(all)
for s in "${steps[@]}"; do
    case "$s" in
        all) step_packages; step_venv; step_bpf; step_services; step_images ;;
        packages) step_packages ;;
        venv) step_venv; step_bpf ;;
        services) step_services ;;
        images) step_images ;;
        *) die "unknown step '$s' (all, packages, venv, services, images)" ;;
    esac
done
