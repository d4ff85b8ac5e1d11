"""Training: one module per stage of the method (docs/architecture.md §1), plus shared losses."""
