"""fuzzconv: find and isolate where converting or compiling an image-recognition model changes
what it predicts.

The orchestrating process (this package, minus what runs inside workers) imports no deep-learning
framework: each framework family runs in its own worker subprocess (see :mod:`fuzzconv.workers`).
"""

__version__ = "0.1.0"
