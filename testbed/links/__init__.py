"""Link emulation backends: kernel netem where present, the project's userspace emulator elsewhere."""
