"""Training: one module per stage of the method (DESIGN §1), plus shared losses."""
