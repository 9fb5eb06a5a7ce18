"""Helpers that tests and benchmarks share: live servers on 127.0.0.1, e2e host set-up."""
