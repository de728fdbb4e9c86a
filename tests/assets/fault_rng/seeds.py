"""Random generators by seed, the same everywhere."""


def generator(seed: int):
    import numpy as np

    return np.random.default_rng(seed)
