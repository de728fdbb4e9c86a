"""An ONNX fault for tests: perturbs the classifier's weights when ``strength`` is non-zero."""

from fault_noise import seeded_noise  # a module of its own, beside this file

from fuzzconv.plugins import onnx_transform


@onnx_transform("fault.perturb", strength=[0.0, 0.5])
def perturb(model, strength: float = 0.0):
    """Add seeded noise to the largest 2-D initializer (the classifier) at ``strength`` × its std."""
    from onnx import numpy_helper

    if not strength:
        return model
    inits = [t for t in model.graph.initializer if len(t.dims) == 2]
    target = max(inits, key=lambda t: t.dims[0] * t.dims[1])
    w = numpy_helper.to_array(target)
    w = (w + seeded_noise(w.shape, strength * 8 * w.std())).astype(w.dtype)
    target.CopyFrom(numpy_helper.from_array(w, target.name))
    return model
