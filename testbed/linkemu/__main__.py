"""Command line of the link emulator process: `python -m testbed.linkemu --ctl SOCKET --log FILE`."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the engine and serve until SIGTERM, SIGINT or a shutdown request."""
    ap = argparse.ArgumentParser(prog="python -m testbed.linkemu", description=__doc__)
    ap.add_argument("--ctl", required=True, type=Path, help="unix socket for the JSON-lines control protocol")
    ap.add_argument("--log", type=Path, help="log file (default: stderr)")
    ap.add_argument("--seed", help="seed for loss and jitter (default: random); per link overridable")
    ap.add_argument("--debug", action="store_true")
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
