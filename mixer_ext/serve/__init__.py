"""The worker's HTTP endpoint: HLS, the player page, health, readiness, the metadata socket."""
