"""The userspace link emulator: one process per run forwarding inner veth ends with per-direction delay, jitter, loss, rate and queue limit."""

from testbed.linkemu.schedule import DEFAULT_LIMIT, Counters, Direction, ShapeParams, parse_shape

__all__ = ["DEFAULT_LIMIT", "Counters", "Direction", "ShapeParams", "parse_shape"]
