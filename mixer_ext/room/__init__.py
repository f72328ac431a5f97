"""Room connectors: how the bot joins a room (embedded server or Janus VideoRoom)."""
