"""Helpers shared by the test suite and the benchmarks (never used by the product).

``net`` (free ports, waiting for a port), ``core`` (synthetic senders and tones for the
mixer core), ``feed`` (mixed frames and payloads fed to an ``OutputPipeline``), ``janus``
(a real Janus started on a free port).  They live in the package so that ``bench/`` does
not import the test suite; nothing here imports pytest.
"""
