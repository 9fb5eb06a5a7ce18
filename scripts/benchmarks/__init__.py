"""Sections of `make bench`; each measures side by side in one run and returns Markdown."""
