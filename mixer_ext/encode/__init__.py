"""Stage 3 of the pipeline: the one AAC encoder and the fan-out of its packets.

The mix is encoded once (``encoder``); ``fanout.OutputPipeline`` takes mixed frames and
payloads from the clock, encodes off the event loop and hands the same packets to every
output of ``mixer_ext.outputs``.
"""
