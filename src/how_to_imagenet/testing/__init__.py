"""For tests, `make demo` and `make bench` only, not in the wheel: the ImageNet-shaped fixture, its
loopback web seed and torrents, crafted archives, and helpers that drive the real interface (make)."""
