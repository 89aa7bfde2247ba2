"""HTTP and WebSocket routes. Everything below this package is testable without a server."""
