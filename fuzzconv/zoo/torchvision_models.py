"""PyTorch source models: the paper's four torchvision twins and ``tiny_torch``.

The builders named in :data:`fuzzconv.zoo.MODELS` run inside the ``torch`` worker
(:meth:`fuzzconv.worker_main.Server.op_build`). Each one builds the architecture, gives it weights
(calibrated from a calibration batch, or real ImageNet weights found on disk; see
:mod:`fuzzconv.zoo.weights`) and writes the torch artifact: a JSON manifest
(``model.torch.json``) naming the architecture, with the state dict beside it as ``weights.npz``.
Nothing is pickled, so loading an artifact never runs code from a file;
:func:`fuzzconv.formats.torch.load_torch_module` rebuilds the module from
:data:`fuzzconv.zoo.torch_architectures.ARCHITECTURES`.

Torch is imported inside functions, so the orchestrator may import this module without it.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import UsageError
from ..formats.torch import write_manifest
from ..gen.spec import GenSpec
from .torch_architectures import ARCHITECTURES, architecture
from .weights import calibrated_classifier, check_spread, find_imagenet_weights

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "weights.npz"


# Keys of real checkpoints that the architecture built here does not have.
_IGNORED_CHECKPOINT_PREFIXES = {"inception_v3": ("AuxLogits.",)}
# Old torchvision DenseNet checkpoints name layers ``norm.1``; torchvision renames them on load.
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                           r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")


# -- weights -----------------------------------------------------------------------------------

def _final_linear(module: "torch.nn.Module") -> "torch.nn.Linear":
    from torch import nn

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear classifier to calibrate")
    return linears[-1]


def calibrate(module: "torch.nn.Module", batch: np.ndarray, seed: int,
              check: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Give a random network batch-norm statistics and a classifier fitted to a calibration batch.

    Torch's BatchNorm updates ``running = (1 - momentum) * running + momentum * batch``, so
    momentum 1.0 makes one forward pass in training mode replace the running statistics by the
    batch's. The classifier (the last Linear) is then drawn by :func:`calibrated_classifier` over
    the standardised penultimate features (that Linear's input) of the calibrated network in eval
    mode.

    ``check`` is given the penultimate features (and may refuse the model).

    Returns:
        The calibrated network's logits on the calibration batch.
    """
    import torch
    from torch import nn

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = 1.0
    module.train()
    with torch.no_grad():
        module(x)
    module.eval()
    fc = _final_linear(module)
    features: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda _m, args, _out: features.append(args[0].detach()))
    try:
        with torch.no_grad():
            module(x)
    finally:
        hook.remove()
    feats = features[0].numpy().astype(np.float64)
    if check is not None:
        check(feats)
    # A random network's features vary mostly along one direction (ResNet-101: ~94 % of the
    # calibration variance), so a random classifier over the raw features gives few distinct
    # labels (ResNet-101, seeds 0–2: 55, 37 and 51 on 200 default-corpus images). The classifier
    # is drawn over standardised features instead (then 116, 97 and 97), and the
    # standardisation folded into W and b; features that barely vary are not amplified past a
    # tenth of the mean spread.
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    std = np.maximum(std, 0.1 * std.mean())
    w_std, b_std = calibrated_classifier((feats - mean) / std, fc.out_features, seed)
    w = w_std.astype(np.float64) / std[:, None]
    b = b_std - (mean / std) @ w_std.astype(np.float64)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, dtype=np.float32)))
        fc.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        return module(x).numpy()


def _load_checkpoint(module: "torch.nn.Module", arch: str, path: Path) -> None:
    """Load real weights from a ``.pth`` state dict (``weights_only``: no code runs)."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = state.get("state_dict", state)
    renamed = {}
    for key, value in state.items():
        if key.startswith(_IGNORED_CHECKPOINT_PREFIXES.get(arch, ())):
            continue
        m = _DENSENET_KEY.match(key) if arch == "densenet121" else None
        renamed[m.group(1) + m.group(2) if m else key] = value
    module.load_state_dict(renamed, strict=True)


# -- artifacts ---------------------------------------------------------------------------------

def save_zoo_artifact(module: "torch.nn.Module", dst: Path, *, model: str, arch: str,
                      options: dict[str, Any] | None = None) -> None:
    """Write the manifest at ``dst`` and the state dict beside it as ``weights.npz``."""
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    np.savez(dst.parent / WEIGHTS_FILE, **state)
    write_manifest(dst, "zoo", model, architecture=arch, options=options or {},
                   weights=WEIGHTS_FILE)


def _build(arch: str, *, model: dict, weights: str, seed: int, dst: Path,
           calibration: str | None, options: dict[str, Any] | None = None,
           check: Callable[[np.ndarray], None] | None = None) -> dict[str, Any]:
    import torch

    options = dict(options or {})
    info: dict[str, Any] = {"weights": weights}
    # Seeded, deterministic initialisation and calibration: the same seed gives the same bits.
    # fork_rng keeps the worker's global RNG as it was.
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if weights == "calibrated":
                if calibration is None:
                    raise ValueError("calibrated weights need a calibration batch")
                module = architecture(arch, options)
                batch = np.load(calibration, allow_pickle=False)
                logits = calibrate(module, batch, seed, check)
                top = logits.argmax(axis=1)
                info["calibration_images"] = int(len(batch))
                info["calibration_labels"] = int(len(np.unique(top)))
            else:
                path = find_imagenet_weights(model, weights)
                if arch == "inception_v3":
                    # torchvision's Inception weights come from Google's [-1, 1] preprocessing;
                    # torchvision turns transform_input on whenever it loads them, and so do we.
                    options["transform_input"] = True
                module = architecture(arch, options)
                _load_checkpoint(module, arch, path)
                info["weights_file"] = str(path)
    finally:
        torch.use_deterministic_algorithms(prev)
    module.eval()
    save_zoo_artifact(module, dst, model=model["name"], arch=arch, options=options)
    info["parameters"] = int(sum(p.numel() for p in module.parameters()))
    return info


def gen(*, model: dict, weights: str, seed: int, dst: Path,
        calibration: str | None) -> dict[str, Any]:
    """Build a generated model (:mod:`fuzzconv.gen`) from the spec the model carries; its
    manifest names the ``gen`` architecture with the annotated spec, which is all a loader needs
    to rebuild the module. Calibrated weights only, as it has no real ones."""
    if weights != "calibrated":
        raise UsageError(f"{model['name']} is generated: it has calibrated weights only")
    spec = GenSpec.from_dict(model["generated"], model["name"])
    return _build("gen", model=model, weights=weights, seed=seed, dst=dst,
                  calibration=calibration, options={"spec": spec.annotated()},
                  check=lambda features: check_spread(features, spec.name))


#: The builders :class:`fuzzconv.zoo.ModelSpec` names (``builder``), for the ``torch`` worker: one
#: per architecture, each building it and giving it weights (see :func:`_build`), and :func:`gen`.
BUILDERS = {**{arch: partial(_build, arch) for arch in ARCHITECTURES if arch != "gen"},
            "gen": gen}
