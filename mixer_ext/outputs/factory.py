"""Outputs built from their specs, with every hook wired at construction.

The one place that maps an ``OutputSpec`` (``hls:``, ``rtmp(s)://``, ``file:``) to its
``Output``; ``OutputPipeline`` calls it for each spec before any output opens, so nothing
is attached to an output that is already running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mixer_ext.context import FileOutputSpec, HlsOutputSpec, OutputSpec, RtmpOutputSpec
from mixer_ext.encode.encoder import AacParams
from mixer_ext.errors import MixerError
from mixer_ext.outputs.base import Output
from mixer_ext.outputs.hls import HlsOutput
from mixer_ext.outputs.recording import FileOutput
from mixer_ext.outputs.rtmp import RtmpOutput
from mixer_ext.settings import Settings


def build_output(
    spec: OutputSpec,
    params: AacParams,
    settings: Settings,
    *,
    keep_recordings: bool = False,
    rtmp_options: Mapping[str, Any] | None = None,
    on_hls_change: Callable[[str], None] | None = None,
) -> Output:
    """The output for ``spec``.

    ``on_hls_change(name)`` is called (on the output's thread) after each rewrite of an
    HLS output's playlist, e.g. to wake the origin's blocking reloads; ``keep_recordings``:
    a resumed run never overwrites an earlier process's recording; ``rtmp_options``: the
    RTMP output's test/bench knobs.
    """
    if isinstance(spec, HlsOutputSpec):
        name = spec.name
        changed = None if on_hls_change is None else (lambda: on_hls_change(name))
        return HlsOutput(name, params, settings, on_change=changed)
    if isinstance(spec, RtmpOutputSpec):
        return RtmpOutput(
            spec.url, params, settings.rtmp_reconnect_max_delay, **dict(rtmp_options or {})
        )
    if isinstance(spec, FileOutputSpec):
        return FileOutput(spec.path, spec.container, params, keep_existing=keep_recordings)
    raise MixerError(f"unsupported output {spec!r}")  # parse_output admits nothing else
