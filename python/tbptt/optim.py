"""Optimiser settings. Each backend implements the step itself, with PyTorch's semantics:
`torch.optim.SGD(params, lr, momentum)` and `torch.optim.Adam(params, lr, betas, eps)`."""

from __future__ import annotations

from . import _checks


class SGD:
    """p -= lr * v, with v = momentum * v + g (v = g on the first step), as torch.optim.SGD."""

    name = "sgd"

    def __init__(self, lr, momentum=0.0):
        self.lr = _checks.finite_float("lr", lr, minimum=0.0)
        self.momentum = _checks.finite_float("momentum", momentum, minimum=0.0)

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, "momentum": self.momentum}

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum})"


class Adam:
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam (no weight decay, no amsgrad)."""

    name = "adam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr = _checks.finite_float("lr", lr, minimum=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_checks.finite_float("betas[0]", betas[0], minimum=0.0, below=1.0),
                      _checks.finite_float("betas[1]", betas[1], minimum=0.0, below=1.0))
        self.eps = _checks.finite_float("eps", eps, minimum=0.0)

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, "betas": list(self.betas), "eps": self.eps}

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps})"


def from_config(config: dict):
    config = dict(config)
    name = config.pop("name")
    if name == "sgd":
        return SGD(**config)
    if name == "adam":
        return Adam(lr=config["lr"], betas=tuple(config["betas"]), eps=config["eps"])
    raise ValueError(f"unknown optimizer {name!r}")
