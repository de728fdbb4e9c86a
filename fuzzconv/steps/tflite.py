"""tflite steps (being written)."""
