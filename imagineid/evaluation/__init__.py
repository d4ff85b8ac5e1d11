"""Metrics and reports on generated frames and videos."""
