"""Optimiser settings. Each backend implements the step itself, with PyTorch's semantics:
`torch.optim.SGD(params, lr, momentum, weight_decay)`, `torch.optim.Adam(params, lr, betas, eps)`
and `torch.optim.AdamW(params, lr, betas, eps, weight_decay)`."""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

from . import _checks


class SGD:
    """p -= lr * v, with v = momentum * v + g (v = g on the first step), as torch.optim.SGD;
    weight_decay adds weight_decay * p to the (clipped) gradient g first, as torch does (L2)."""

    name = "sgd"

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr = _checks.finite_float("lr", lr, minimum=0.0)
        self.momentum = _checks.finite_float("momentum", momentum, minimum=0.0)
        self.weight_decay = _checks.finite_float("weight_decay", weight_decay, minimum=0.0)

    def config(self) -> Dict[str, Any]:
        """The settings as JSON-able values: what `optim.from_config` rebuilds it from."""
        return {
            "name": self.name,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
        }

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam:
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam (no weight decay, no
    amsgrad)."""

    name = "adam"

    def __init__(
        self, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr = _checks.finite_float("lr", lr, minimum=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            _checks.finite_float("betas[0]", betas[0], minimum=0.0, below=1.0),
            _checks.finite_float("betas[1]", betas[1], minimum=0.0, below=1.0),
        )
        self.eps = _checks.finite_float("eps", eps, minimum=0.0)

    def config(self) -> Dict[str, Any]:
        """The settings as JSON-able values: what `optim.from_config` rebuilds it from."""
        return {"name": self.name, "lr": self.lr, "betas": list(self.betas), "eps": self.eps}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps})"


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW: every step
    first shrinks the parameters, p *= 1 - lr * weight_decay, then makes Adam's step. The decay
    is not part of the gradient, so clipping and Adam's moments never see it."""

    name = "adamw"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps)
        self.weight_decay = _checks.finite_float("weight_decay", weight_decay, minimum=0.0)

    def config(self) -> Dict[str, Any]:
        """The settings as JSON-able values: what `optim.from_config` rebuilds it from."""
        return {**super().config(), "weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, weight_decay={self.weight_decay})"


OPTIMIZERS = (SGD, Adam, AdamW)
Optimizer = Union[SGD, Adam, AdamW]


def from_config(config: Dict[str, Any]) -> Optimizer:
    """The optimiser a `config()` describes (files written before weight decay existed have
    none)."""
    config = dict(config)
    name = config.pop("name")
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    for cls in OPTIMIZERS:
        if cls.name == name:
            return cls(**config)
    raise ValueError(f"unknown optimizer {name!r}")
