"""PyTorch architectures of the zoo, by the name a torch artifact's manifest gives them.

A manifest (:mod:`fuzzconv.formats.torch`) names one of :data:`ARCHITECTURES` and never a module
path, so loading an artifact cannot make the loader import arbitrary code. The builders in
:mod:`.torchvision_models` give these architectures their weights. Torch and torchvision are
imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..gen.torch_source import render_torch

if TYPE_CHECKING:
    import torch


def _mobilenet_v2(**kw: Any) -> "torch.nn.Module":
    from torchvision import models

    return models.mobilenet_v2(weights=None, **kw)


def _resnet101(**kw: Any) -> "torch.nn.Module":
    from torchvision import models

    return models.resnet101(weights=None, **kw)


def _densenet121(**kw: Any) -> "torch.nn.Module":
    from torchvision import models

    return models.densenet121(weights=None, **kw)


def _inception_v3(transform_input: bool = False, **kw: Any) -> "torch.nn.Module":
    from torchvision import models

    # The auxiliary head only matters in training; init_weights=True keeps torchvision's
    # truncated-normal initialisation (and silences its warning about the default changing).
    return models.inception_v3(weights=None, aux_logits=False, init_weights=True,
                               transform_input=transform_input, **kw)


def _tiny_torch() -> "torch.nn.Module":
    """A small CNN (3×32×32 → 10) with the operators that matter in the paper's networks."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int, **kw: Any) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False, **kw), nn.BatchNorm2d(cout),
                             nn.ReLU6(inplace=True))

    class TinyTorch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = cbr(3, 16, 3, padding="same")                        # 16×32×32
            self.depthwise = cbr(16, 16, 3, padding=1, groups=16)
            self.project = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
            self.pool = nn.MaxPool2d(2)                                       # 16×16×16
            self.branch_conv = cbr(16, 16, 3, padding="valid")                # 16×14×14
            self.branch_avg = nn.Sequential(nn.AvgPool2d(3, stride=1),        # 16×14×14
                                            cbr(16, 16, 1))
            self.down = cbr(32, 32, 3, stride=2, padding=1)                   # 32×7×7
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.project(self.depthwise(x))  # inverted-residual style add
            x = self.pool(x)
            x = torch.cat([self.branch_conv(x), self.branch_avg(x)], dim=1)
            x = self.gap(self.down(x))
            return self.fc(torch.flatten(x, 1))

    return TinyTorch()


def _generated(spec: dict[str, Any]) -> "torch.nn.Module":
    """A generated model (:mod:`fuzzconv.gen`) from its annotated spec: its PyTorch source
    (:func:`render_torch`, which admits only checked numbers and names into it), executed."""
    namespace: dict[str, Any] = {}
    exec(compile(render_torch(spec), "<generated>", "exec"), namespace)
    return namespace["Model"]()


# Architecture name (as written in manifests) → constructor. The manifest names one of these and
# never a module path, so an artifact cannot make the loader import arbitrary code.
ARCHITECTURES: dict[str, Callable[..., "torch.nn.Module"]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet101": _resnet101,
    "densenet121": _densenet121,
    "inception_v3": _inception_v3,
    "tiny_torch": _tiny_torch,
    "gen": _generated,
}


def architecture(name: str, options: dict[str, Any] | None = None) -> "torch.nn.Module":
    """A fresh, randomly initialised module of a named architecture.

    Raises:
        ValueError: the name is not in :data:`ARCHITECTURES`.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown torch architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name](**(options or {}))
