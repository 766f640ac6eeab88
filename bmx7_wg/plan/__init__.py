"""Desired and observed state, and the one planner that compares them."""
