"""HTTP and WebSocket API: translates requests to service calls, nothing more."""
