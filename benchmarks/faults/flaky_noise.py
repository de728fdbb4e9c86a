"""A nondeterministic fault: it must come out ``flaky``.

With ``noise`` set, unseeded noise is added to the classifier's weights, so every conversion
makes a different model and each cold re-run flips a different set of images — like a converter
that reads uninitialised memory.
"""

from _graph import classifier, constant, set_own_input

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "nondeterministic",
    "culprit": {"step": "fault.flaky_noise", "params": {"noise": True}},
    "symptom": "label_flip",
    "flaky": True,
}


def affected_node(model):
    node = classifier(model)
    return node.name if node is not None else None


@onnx_transform("fault.flaky_noise", noise=[False, True])
def flaky_noise(model, noise: bool = False):
    """Add fresh random noise to the classifier weights on every call."""
    import numpy as np

    node = classifier(model) if noise else None
    if node is not None:
        w = constant(model, node.input[1])
        rng = np.random.default_rng()  # unseeded on purpose
        w = w + 1.5 * w.std() * rng.standard_normal(w.shape)
        set_own_input(model, node, 1, w.astype(np.float32))
    return model
