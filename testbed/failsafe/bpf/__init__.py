"""The fail-safe NIC's kernel data path: the cls_bpf program's C source, its build, and libbpf through ctypes."""
