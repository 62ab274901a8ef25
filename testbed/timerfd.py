"""A CLOCK_MONOTONIC timerfd armed with absolute deadlines (through ctypes), for sub-millisecond wake-ups."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_create.restype = ctypes.c_int
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
_libc.timerfd_settime.restype = ctypes.c_int


class Timer:
    """A non-blocking timerfd on the clock `time.monotonic()` reads; `arm(t)` wakes epoll at time t."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self.armed: float | None = None
        self._spec = _Itimerspec()  # reused: no allocation per arm
        self._ref = ctypes.byref(self._spec)

    def arm(self, deadline: float) -> None:
        """Expire once at monotonic time `deadline` (seconds); a past deadline expires at once."""
        if deadline == self.armed:
            return
        sec = int(deadline)
        nsec = int((deadline - sec) * 1e9)
        if sec <= 0 and nsec <= 0:
            nsec = 1  # an all-zero value would disarm instead
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = nsec
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed = deadline

    def disarm(self) -> None:
        """Cancel any pending expiry."""
        if self.armed is None:
            return
        self._spec.it_value.tv_sec = 0
        self._spec.it_value.tv_nsec = 0
        _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None)
        self.armed = None

    def consume(self) -> None:
        """Read the expiry count so epoll stops reporting the fd; the timer is then unarmed."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = None

    def close(self) -> None:
        """Release the file descriptor."""
        os.close(self.fd)
