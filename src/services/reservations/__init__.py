"""Reservations: GPUs booked for a time window, and the clock that starts and ends them."""
