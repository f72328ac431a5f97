"""Encoder stage and outputs: one AAC encoder, its packets fanned out to HLS, RTMP and files."""
