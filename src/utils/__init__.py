"""Leaf helpers with no platform state: timestamps, checked URL downloads, the NoCloud seed."""
