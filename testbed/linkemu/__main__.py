"""Command line of the link emulator process: `python -m testbed.linkemu --ctl SOCKET --log FILE`.

The process asks for priority: nice -10 (what ovs-ctl gives ovs-vswitchd) with a 0.1 ms time
slice (EEVDF's custom slice, sched_setattr, Linux >= 6.12), so that a frame's wake-up preempts
ordinary work at once. On a loaded 2-core VM an ordinary emulator waited for a CPU behind other
work on ~15 % of its releases (p90 of a 5 ms hop 6.4-7.3 ms, bench/README.md), which over three
links moved the median RTT by 1-2 ms. Real-time scheduling (SCHED_FIFO 1) gave the same RTTs but
cost 500 Mbit/s TCP 2.5 % of its goodput (the emulator preempted iperf3 on every frame); the slice
did not. It mostly sleeps (epoll, timerfd), so it costs no core. Where the slice is refused, nice
-10 alone; where that is too, ordinary; the log says which.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import platform
import select
import signal
import struct
import sys
from pathlib import Path

from testbed.linkemu.control import serve
from testbed.linkemu.engine import Engine


def _no_ipv6() -> None:
    """Keep the inner ends silent: no IPv6 router solicitations or DAD from the emulator's namespace."""
    for scope in ("all", "default"):
        try:
            Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6").write_text("1\n")
        except OSError:
            pass


NICE = -10
SLICE_NS = 100_000  # EEVDF clamps a custom slice to 0.1-100 ms: the shortest
SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # the syscall's number; elsewhere nice alone
_SCHED_ATTR = struct.Struct("IIQiIQQQII")  # size, policy, flags, nice, priority, runtime, deadline, period, util


def sched_attr(nice: int, slice_ns: int) -> bytes:
    """A struct sched_attr for SCHED_OTHER at `nice` with a time slice of `slice_ns`."""
    return _SCHED_ATTR.pack(_SCHED_ATTR.size, 0, 0, nice, 0, slice_ns, 0, 0, 0, 0)


def raise_priority() -> str:
    """Ask for nice NICE with a SLICE_NS slice for this process (its threads inherit it); what it got."""
    number = SCHED_SETATTR.get(platform.machine())
    why = "no sched_setattr number for this machine"
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(sched_attr(NICE, SLICE_NS))
        if libc.syscall(number, 0, buf, 0) == 0:
            return f"nice {NICE}, slice {SLICE_NS / 1000:g} us"
        why = os.strerror(ctypes.get_errno())
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        return f"nice {NICE} (slice refused: {why})"
    except OSError as exc:
        return f"ordinary (slice refused: {why}; nice {NICE} refused: {exc.strerror})"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the engine and serve until SIGTERM, SIGINT or a shutdown request."""
    ap = argparse.ArgumentParser(prog="python -m testbed.linkemu", description=__doc__)
    ap.add_argument("--ctl", required=True, type=Path, help="unix socket for the JSON-lines control protocol")
    ap.add_argument("--log", type=Path, help="log file (default: stderr)")
    ap.add_argument("--seed", help="seed for loss and jitter (default: random); per link overridable")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--no-priority", action="store_true",
                    help=f"keep ordinary scheduling (default: nice {NICE}, short slice)")
    args = ap.parse_args(argv)
    logging.basicConfig(
        filename=str(args.log) if args.log else None,
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    seed: int | str | None = args.seed
    if seed is not None and seed.lstrip("-").isdigit():
        seed = int(seed)
    _no_ipv6()
    sched = "ordinary (--no-priority)" if args.no_priority else raise_priority()
    logging.getLogger(__name__).info("scheduling: %s", sched)
    engine = Engine(seed=seed)

    def stop(signum: int, _frame: object) -> None:
        engine.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # a signal must end epoll's wait, not only run
    signal.set_wakeup_fd(wake_w)
    engine.extra_fds[wake_r] = lambda fd: os.read(fd, 512)
    engine.epoll.register(wake_r, select.EPOLLIN)
    logging.getLogger(__name__).info("link emulator started, control socket %s, seed %r", args.ctl, seed)
    serve(engine, args.ctl, on_stop=engine.close)
    logging.getLogger(__name__).info("link emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
