"""Prefect flows: they compose tasks, choose runners and resources, and publish artifacts."""
