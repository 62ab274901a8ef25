"""libbpf (libbpf.so.1, Debian's libbpf1) through ctypes: load an object, update its maps, attach it to tc.

Map updates through libbpf measured 32 us (bpftool: 1.7 ms), so the NIC's control plane updates the
kernel's tables in its own process. `TcHook` attaches a program in direct-action mode on an
interface's clsact ingress hook; `detach` removes the clsact qdisc and with it every filter on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket

from testbed.errors import TestbedError

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_ANY = 0
BPF_F_LOCK = 4  # update/lookup a value holding a bpf_spin_lock under that lock


class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded libbpf (TestbedError when it is not installed)."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            l = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise TestbedError(f"BPF data path: cannot load libbpf ({exc}); install libbpf1") from None
        vp, ci = ctypes.c_void_p, ctypes.c_int
        for fn, args, res in (("bpf_object__open_file", [ctypes.c_char_p, vp], vp), ("bpf_object__load", [vp], ci),
                              ("bpf_object__close", [vp], None),
                              ("bpf_object__find_program_by_name", [vp, ctypes.c_char_p], vp),
                              ("bpf_program__fd", [vp], ci),
                              ("bpf_object__find_map_fd_by_name", [vp, ctypes.c_char_p], ci),
                              ("bpf_map_update_elem", [ci, vp, vp, ctypes.c_uint64], ci),
                              ("bpf_map_lookup_elem", [ci, vp, vp], ci), ("bpf_map_delete_elem", [ci, vp], ci),
                              ("bpf_map_lookup_elem_flags", [ci, vp, vp, ctypes.c_uint64], ci),
                              ("bpf_map_get_next_key", [ci, vp, vp], ci),
                              ("bpf_tc_hook_create", [vp], ci), ("bpf_tc_hook_destroy", [vp], ci),
                              ("bpf_tc_attach", [vp, vp], ci), ("libbpf_num_possible_cpus", [], ci),
                              ("libbpf_set_print", [vp], vp)):
            f = getattr(l, fn)
            f.argtypes, f.restype = args, res
        l.libbpf_set_print(None)  # libbpf's own messages would go to stderr unasked
        _lib = l
    return _lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc < -1 else ctypes.get_errno()
        raise TestbedError(f"BPF data path: {what}: {os.strerror(err)}")
    return rc


class Map:
    """One map of a loaded object, with fixed key and value sizes."""

    def __init__(self, fd: int, key_size: int, value_size: int, percpu: bool = False) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.ncpus = lib().libbpf_num_possible_cpus() if percpu else 1
        self._vbuf = ctypes.create_string_buffer(((value_size + 7) // 8 * 8) * self.ncpus)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Set `key` to `value`."""
        _check(lib().bpf_map_update_elem(self.fd, key, value, flags), "map update")

    def lookup(self, key: bytes, flags: int = 0) -> bytes | None:
        """The value of `key` (for a per-CPU map: every CPU's, concatenated, 8-byte aligned), or None."""
        rc = (lib().bpf_map_lookup_elem_flags(self.fd, key, self._vbuf, flags) if flags
              else lib().bpf_map_lookup_elem(self.fd, key, self._vbuf))
        if rc < 0:
            return None
        return self._vbuf.raw

    def keys(self) -> list[bytes]:
        """Every key in the map (a snapshot)."""
        out: list[bytes] = []
        cur = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        prev = None
        while lib().bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            out.append(nxt.raw)
            ctypes.memmove(cur, nxt, self.key_size)
            prev = cur
        return out

    def delete(self, key: bytes) -> None:
        """Remove `key` (no error when it is not there)."""
        lib().bpf_map_delete_elem(self.fd, key)


class BpfObject:
    """An opened and loaded BPF object file."""

    def __init__(self, path: str) -> None:
        l = lib()
        self.obj = l.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise TestbedError(f"BPF data path: cannot open {path}: {os.strerror(ctypes.get_errno())}")
        rc = l.bpf_object__load(self.obj)
        if rc < 0:
            l.bpf_object__close(self.obj)
            self.obj = None
            raise TestbedError(f"BPF data path: the kernel refused {path}: {os.strerror(-rc)}")

    def prog_fd(self, name: str) -> int:
        """The fd of program `name`."""
        prog = lib().bpf_object__find_program_by_name(self.obj, name.encode())
        if not prog:
            raise TestbedError(f"BPF data path: no program {name!r} in the object")
        return _check(lib().bpf_program__fd(prog), f"program {name}")

    def map(self, name: str, key_size: int, value_size: int, percpu: bool = False) -> Map:
        """Map `name`."""
        fd = lib().bpf_object__find_map_fd_by_name(self.obj, name.encode())
        return Map(_check(fd, f"map {name}"), key_size, value_size, percpu)

    def close(self) -> None:
        """Release the object (programs stay while a tc filter holds them)."""
        if self.obj:
            lib().bpf_object__close(self.obj)
            self.obj = None


def _hook(iface: str, point: int) -> _TcHook:
    return _TcHook(ctypes.sizeof(_TcHook), socket.if_nametoindex(iface), point, 0, 0)


def attach_ingress(iface: str, prog_fd: int) -> None:
    """Attach `prog_fd` (direct action) on `iface`'s clsact ingress, creating the qdisc."""
    hook = _hook(iface, BPF_TC_INGRESS)
    rc = lib().bpf_tc_hook_create(ctypes.byref(hook))
    if rc < 0 and rc != -17:  # EEXIST: the clsact qdisc is already there
        _check(rc, f"clsact qdisc on {iface}")
    opts = _TcOpts(ctypes.sizeof(_TcOpts), prog_fd, 0, 0, 0, 0, 0)
    _check(lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), f"tc attach on {iface}")


def detach(iface: str) -> None:
    """Remove `iface`'s clsact qdisc and every tc filter on it (nothing happens if there is none)."""
    try:
        hook = _hook(iface, BPF_TC_INGRESS | BPF_TC_EGRESS)
    except OSError:
        return
    lib().bpf_tc_hook_destroy(ctypes.byref(hook))
