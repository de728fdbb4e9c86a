"""keras steps (being written)."""
