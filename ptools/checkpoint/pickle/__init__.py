"""Pickles, never run: the static opcode scan (`static_scan`), the restricted unpickler (`restricted`), and the
tensor structure it yields (`structure`)."""
