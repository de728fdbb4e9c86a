"""tvm steps (being written)."""
