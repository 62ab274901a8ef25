"""Where start-up and teardown time goes: wall time of each phase and of each kind of external call.

Used by bench/startup.py --profile. It wraps, for the length of one measurement, the testbed's
phases (Testbed._prelaunch_containers, Mininet build/start/stop, …), the container calls of
testbed.emulation.prelaunch, the link and switch classes, every `testbed.proc.run` (grouped by
command: `ip link`, `ovs-vsctl`, `ethtool`, …) and every Mininet shell command (grouped by its
first word). Calls made from threads add up to more than the elapsed time: the table shows both
the total of the calls and how many there were.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable


def _label_proc(args: Any, *_a: Any, **_k: Any) -> str:
    argv = [str(a) for a in args]
    if argv[:1] == ["nsenter"]:
        argv = [a for a in argv[1:] if not a.startswith("-")][0:]
    head = argv[0].rsplit("/", 1)[-1] if argv else "?"
    if head in ("ip", "ovs-vsctl", "ovs-ofctl", "docker", "tc") and len(argv) > 1:
        words = [a for a in argv[1:] if not a.startswith("-")]
        head += " " + (words[0] if words else "")
    return f"proc: {head}"


def _label_cmd(node: Any, *args: Any, **_k: Any) -> str:
    text = " ".join(str(a) for a in args).strip()
    return f"shell: {text.split()[0] if text else '?'}"


class Profile:
    """Wraps callables for one measurement; `table()` gives (label, calls, total seconds), biggest first."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        """Time every call of `owner.attr` under `label` (a string, or a function of the call's arguments)."""
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        profile = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                name = label if isinstance(label, str) else label(*args, **kwargs)
                with profile._lock:
                    profile.total[name] += time.monotonic() - t0
                    profile.calls[name] += 1

        wrapped: Any = timed
        if isinstance(original, staticmethod):
            wrapped = staticmethod(timed)
        elif isinstance(original, classmethod):
            wrapped = classmethod(timed)
        setattr(owner, attr, wrapped)
        self._undo.append((owner, attr, original))

    def install(self) -> None:
        """Wrap the testbed's start-up and teardown steps."""
        from mininet.net import Mininet
        from mininet.node import Node

        from testbed import clean, proc
        from testbed.controller import Controller
        from testbed.emulation import prelaunch, testbed
        from testbed.emulation.dockerhost import DockerHost
        from testbed.emulation.link import TestbedLink
        from testbed.emulation.switch import TestbedSwitch

        T = testbed.Testbed
        for attr in ("_choose_backends", "_prelaunch_containers", "_add_switches", "_add_wan",
                     "_prepare_interfaces", "_start_nics", "_release_services", "_wait_services", "_remove_containers",
                     "selfcheck"):
            if attr in T.__dict__:
                self.wrap(T, attr, f"phase: Testbed.{attr}")
        self.wrap(T, "_add_hosts", "phase: Testbed._add_hosts (includes prelaunch)")
        self.wrap(Controller, "start", "phase: controller start")
        self.wrap(Controller, "wait_connected", "phase: switches connect to the controller")
        self.wrap(testbed, "cmd_all", "phase: cmd_all (ethtool / ready on every host)")
        self.wrap(Mininet, "build", "phase: Mininet.build")
        self.wrap(Mininet, "start", "phase: Mininet.start")
        self.wrap(Mininet, "stop", "phase: Mininet.stop")
        self.wrap(clean, "clean_run", "phase: clean_run (ledger sweep)")
        self.wrap(prelaunch, "start_container", lambda client, args, node: (
            "docker: holder create+start" if args.get("labels", {}).get("testbed.role") == "netns"
            else "docker: service create+start"))
        self.wrap(prelaunch, "spawn_shell", "docker: spawn exec shell")
        self.wrap(DockerHost, "_adopt_shell", "docker: first prompt of exec shell")
        self.wrap(DockerHost, "terminate", "docker: DockerHost.terminate")
        self.wrap(TestbedLink, "makeIntfPair", "link: makeIntfPair")
        self.wrap(TestbedLink, "delete", "link: delete")
        self.wrap(TestbedSwitch, "batchStartup", "switch: batchStartup (all bridges and ports)")
        self.wrap(TestbedSwitch, "batchShutdown", "switch: batchShutdown")
        self.wrap(proc, "run", _label_proc)
        self.wrap(Node, "cmd", _label_cmd)

    def uninstall(self) -> None:
        """Put every wrapped callable back."""
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def table(self) -> list[tuple[str, int, float]]:
        """(label, calls, total seconds), phases first, then the rest by total time."""
        rows = [(k, self.calls[k], self.total[k]) for k in self.total]
        return sorted(rows, key=lambda r: (not r[0].startswith("phase"), -r[2]))


def print_profile(title: str, rows: list[tuple[str, int, float]], top: int = 25) -> None:
    """The profile as a table."""
    print(f"\n-- profile: {title}")
    print(f"{'what':<58} {'calls':>6} {'total s':>8} {'per call ms':>12}")
    for label, calls, total in rows[:top]:
        print(f"{label:<58} {calls:>6} {total:>8.2f} {total / calls * 1000:>12.1f}")
