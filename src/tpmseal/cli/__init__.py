"""tpmseal."""
