"""The mixer core: plain synchronous classes with no I/O, and one thin clock runner."""
