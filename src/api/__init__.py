"""The HTTP layer: request parsing, routing, validation, views and handlers."""
