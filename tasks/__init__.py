"""Thin Prefect @task wrappers around the imagineid library; they return references, never arrays."""
