"""The experiment seed drives the link emulator: the same seed loses the same packets, another seed others."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from testbed import proc
from testbed.ledger import Ledger, new_run_id
from testbed.links.base import LinkEnds
from testbed.testing import entered_netns
from testbed.topology.model import Shape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

IP1, IP2 = "10.78.0.1", "10.78.0.2"
MAC1, MAC2 = "02:78:00:00:00:01", "02:78:00:00:00:02"
COUNT = 150


def lost_requests(tmp: Path, seed: int) -> list[int]:
    """The icmp_seq numbers lost on a link with 30 % loss towards the pinged side, under `seed`.

    The sending side sends nothing but the pings (no IPv6, static neighbours), so the emulator's
    loss draws for that direction are exactly one per echo request.
    """
    from testbed.emulation.testbed import make_backend

    tag = secrets.token_hex(2)
    names = (f"ls{tag}-h1", f"ls{tag}-h2")
    intfs = (f"ls{tag}h1-e0", f"ls{tag}h2-e0")
    holders: list[subprocess.Popen] = []
    backend = None
    try:
        for ns in names:
            proc.run(["ip", "netns", "add", ns])
            for key in ("all", "default"):
                proc.run(["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], netns=ns)
            holders.append(proc.spawn(["ip", "netns", "exec", ns, "sleep", "600"], output=tmp / f"{ns}.out"))
        pids = [entered_netns(h.pid, ns) for h, ns in zip(holders, names)]
        backend = make_backend("userspace", Ledger(new_run_id(tmp), tmp, state_dir=tmp), tmp, seed)
        backend.create(LinkEnds("wan-a-b", intfs[0], pids[0], intfs[1], pids[1]), Shape(loss_pct=30.0), Shape())
        for ns, intf, ip, mac, peer_ip, peer_mac in ((names[0], intfs[0], IP1, MAC1, IP2, MAC2),
                                                     (names[1], intfs[1], IP2, MAC2, IP1, MAC1)):
            proc.run(["ip", "link", "set", "dev", intf, "address", mac], netns=ns)
            proc.run(["ip", "addr", "add", f"{ip}/24", "dev", intf], netns=ns)
            proc.run(["ip", "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", intf, "nud", "permanent"],
                     netns=ns)
        out = proc.run(["ping", "-n", "-c", COUNT, "-i", "0.01", "-W", "1", IP2], netns=names[0], check=False,
                       timeout=60).stdout
        got = {int(n) for n in re.findall(r"icmp_seq=(\d+)", out)}
        assert got, f"no reply at all: {out[-300:]}"
        return [n for n in range(1, COUNT + 1) if n not in got]
    finally:
        if backend is not None:
            backend.close()
        for h in holders:
            h.terminate()
            h.wait(timeout=5)
        for ns in names:
            proc.run(["ip", "netns", "del", ns], check=False)
        leftover = proc.run(["ip", "netns", "list"]).stdout
        assert not any(n in leftover for n in names), leftover


def test_same_seed_same_losses_other_seed_other_losses(tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / name).mkdir()
        runs.append(lost_requests(tmp_path / name, seed))
    first, again, other = runs
    assert 15 <= len(first) <= 80, f"30 % loss of {COUNT} lost {len(first)}"
    assert first == again, f"seed 7 lost {first}, then {again}"
    assert other != first, f"seeds 7 and 8 both lost {first}"
