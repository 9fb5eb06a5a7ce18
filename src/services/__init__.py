"""The platform's decisions, in wings by resource (see docs/architecture.md "Service wings")."""
