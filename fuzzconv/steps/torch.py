"""torch steps (being written)."""
