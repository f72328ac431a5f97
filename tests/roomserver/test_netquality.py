"""Network quality levels (``roomserver.netquality``) from cumulative RTP counters, no I/O."""

from __future__ import annotations

from mixer_ext.roomserver.netquality import Meter, NetworkQuality, latency_level, message


def test_loss_since_the_last_sample_sets_the_level() -> None:
    meter = Meter()
    meter.sample(0, 0, 0.005)
    assert meter.level is None  # one sample: no interval yet
    meter.sample(50, 0, 0.005)
    assert meter.level == 5
    for n in range(2, 6):  # a quarter lost from now on
        meter.sample(50 + 38 * (n - 1), 12 * (n - 1), 0.005)
    assert meter.fraction_lost is not None and 0.2 < meter.fraction_lost < 0.25
    assert meter.level == 1
    for n in range(6):  # clean again: back up within seconds
        meter.sample(202 + 50 * (n + 1), 48, 0.005)
    assert meter.level == 5


def test_latency_caps_the_level_and_counters_restarting_are_skipped() -> None:
    assert latency_level(0.005, 0.05) == 5
    assert latency_level(0.08, 0.05) == 3
    assert latency_level(0.005, 1.5) == 1
    meter = Meter()
    meter.sample(100, 0)
    meter.sample(150, 0, 0.005, 0.6)
    assert meter.level == 2  # no loss, but 600 ms round trips
    meter.sample(10, 0)  # a stream ended: the sum went down
    assert meter.fraction_lost == 0.0


def test_reports_at_each_verbosity() -> None:
    nq = NetworkQuality.new()
    assert nq.report(1) is None
    nq.send.sample(0, 0, 0.001)
    nq.send.sample(50, 0, 0.001)
    assert nq.report(0) is None and nq.report(1) == 5
    detailed = nq.report(2)
    assert isinstance(detailed, dict) and detailed["level"] == 5
    assert detailed["audio"]["sendStats"]["fractionLost"] == {"fractionLost": 0.0, "level": 5}
    assert message(5, [("PA1", 3), ("PA2", {"level": 4})]) == {
        "type": "network_quality",
        "local": 5,
        "remotes": [{"sid": "PA1", "level": 3}, {"sid": "PA2", "level": 4}],
    }
