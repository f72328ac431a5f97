"""Prometheus metrics, defined in one place so names stay consistent.

Naming follows Prometheus conventions (``_total`` counters, base units:
seconds and bytes).  Label values come from small fixed sets (output kind,
reason, state), never from identities, room names or URLs, so cardinality
stays bounded however many people join.  Per-input figures are therefore
aggregated over inputs: counters are totals, latency is a histogram that
every input observes into.

Everything registers in the default registry: one worker (or room server)
per process.  ``start_metrics_server`` serves ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Enum, Gauge, Histogram, start_http_server

OUTPUT_KINDS = ("hls", "rtmp", "file")
RUN_STATES = ("initializing", "started", "ended", "failed")

# --- mixer -------------------------------------------------------------------
PARTICIPANTS = Gauge("mixer_participants", "Participants in the mix (the bot excluded).")
INPUTS = Gauge("mixer_inputs", "Audio inputs (subscribed tracks) feeding the mix.")
INPUT_LATE_FRAMES = Counter(
    "mixer_input_late_frames_total", "Input frames that arrived too late to be mixed (dropped)."
)
INPUT_LOST_FRAMES = Counter(
    "mixer_input_lost_frames_total", "Input frames missing from a stream (loss detected by gap)."
)
INPUT_MALFORMED_FRAMES = Counter(
    "mixer_input_malformed_frames_total",
    "Input frames dropped as malformed: payloads that do not decode, decoded frames of"
    " unusable format or size.",
)
INPUT_CONCEALED_FRAMES = Counter(
    "mixer_input_concealed_frames_total", "Ticks filled by loss concealment instead of audio."
)
INPUT_BUFFERED_LATENCY = Histogram(
    "mixer_input_buffered_latency_seconds",
    "Audio buffered in an input's jitter buffer, observed per input once per metadata window.",
    buckets=(0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5),
)
TICK_LATENESS = Histogram(
    "mixer_tick_lateness_seconds",
    "How late each 20 ms mixer tick ran against its schedule (start + n * 20 ms).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
PAYLOADS = Counter("mixer_payloads_total", "Timed-metadata payloads emitted.")
CLOCK_RESYNCS = Counter(
    "mixer_clock_resyncs_total",
    "Times the mixer clock re-anchored after the loop stalled for more than a second.",
)

# --- encoder and outputs ------------------------------------------------------
ENCODE_SECONDS = Histogram(
    "mixer_encode_seconds",
    "CPU wall time to AAC-encode one 20 ms mixed frame.",
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02),
)
ENCODER_DROPPED_FRAMES = Counter(
    "mixer_encoder_dropped_frames_total",
    "Mixed frames (and payloads) dropped because the encoder's hand-off queue was full.",
)
OUTPUT_BYTES = Counter("mixer_output_bytes_total", "Bytes written per output kind.", ["kind"])
OUTPUT_RECONNECTS = Counter(
    "mixer_output_reconnects_total", "Reconnects per output kind (RTMP).", ["kind"]
)
OUTPUT_ERRORS = Counter("mixer_output_errors_total", "Errors per output kind.", ["kind"])
OUTPUT_DISCONTINUITIES = Counter(
    "mixer_output_discontinuities_total",
    "Gaps an output marked (HLS: EXT-X-DISCONTINUITY) after dropped audio, a clock resync"
    " or a restart.",
    ["kind"],
)
OUTPUT_DROPPED_PACKETS = Counter(
    "mixer_output_dropped_packets_total",
    "Packets an output dropped because it could not keep up or was disconnected.",
    ["kind"],
)

# --- run -------------------------------------------------------------------------
RUN_STATE = Enum("mixer_run_state", "Lifecycle state of this worker.", states=list(RUN_STATES))
ROOM_JOINS = Counter("mixer_room_joins_total", "Times the bot joined its room.")

# --- Janus connector -------------------------------------------------------------
JANUS_DROPPED_MESSAGES = Counter(
    "mixer_janus_dropped_messages_total",
    "Janus messages dropped as malformed or unexpected, by kind of fault.",
    ["why"],
)
JANUS_RENEGOTIATIONS = Counter(
    "mixer_janus_renegotiations_total", "Subscriber offers from Janus answered by the bot."
)
JANUS_SUBSCRIBE_REFUSALS = Counter(
    "mixer_janus_subscribe_refusals_total",
    "Subscribe or subscriber-join requests Janus refused (their streams are retried).",
)
JANUS_REPAIRED_ANNOUNCEMENTS = Counter(
    "mixer_janus_repaired_announcements_total",
    "Publishers Janus listed in the room but never announced to the bot (found and subscribed).",
)
JANUS_COALESCED_JOINS = Histogram(
    "mixer_janus_streams_per_subscribe",
    "Streams subscribed in one request: joins arriving within the coalescing window share one.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250),
)

# --- embedded room server -----------------------------------------------------------
ROOM_SERVER_ROOMS = Gauge("mixer_room_server_rooms", "Rooms open on this room server.")
ROOM_SERVER_PARTICIPANTS = Gauge(
    "mixer_room_server_participants", "Participants connected to this room server."
)
ROOM_SERVER_REJECTED_MESSAGES = Counter(
    "mixer_room_server_rejected_messages_total",
    "Signaling messages refused (malformed, oversized, unknown type).",
    ["reason"],
)
ROOM_SERVER_REFUSED_JOINS = Counter(
    "mixer_room_server_refused_joins_total", "Joins refused, by reason.", ["reason"]
)
ROOM_SERVER_STATUS_CALLBACKS = Counter(
    "mixer_room_server_status_callbacks_total",
    "Status callback deliveries by outcome (delivered, retried, failed, dropped).",
    ["outcome"],
)
for _outcome in ("delivered", "retried", "failed", "dropped"):
    ROOM_SERVER_STATUS_CALLBACKS.labels(_outcome)

for _kind in OUTPUT_KINDS:  # make every kind visible at 0 from the start
    OUTPUT_BYTES.labels(_kind)
    OUTPUT_RECONNECTS.labels(_kind)
    OUTPUT_ERRORS.labels(_kind)
    OUTPUT_DROPPED_PACKETS.labels(_kind)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
    start_http_server(port, addr=host)
