"""`tbptt info FILE`: describe a model file, a trainer checkpoint or a run folder."""

from __future__ import annotations

import json
import os

import numpy as np

from .. import _files
from ..checkpoint import load_trainer
from . import _folder


def add_parser(commands) -> None:
    info = commands.add_parser(
        "info",
        help="describe a model or trainer checkpoint",
        description="Describe a model file, a trainer checkpoint, or the "
        "output folder of `tbptt train`.",
    )
    info.add_argument("checkpoint", metavar="CHECKPOINT")
    info.set_defaults(run=run)


def run(args) -> int:
    if os.path.isdir(args.checkpoint):
        paths = [os.path.join(args.checkpoint, name) for name in (_folder.MODEL, _folder.TRAINER)]
        paths = [path for path in paths if os.path.exists(path)]
        if not paths:
            raise FileNotFoundError(
                f"{args.checkpoint} holds neither {_folder.MODEL} nor {_folder.TRAINER}"
            )
    else:
        paths = [args.checkpoint]
    for path in paths:
        print("\n".join(_describe(path)))
    return 0


def _file_kind(path: str) -> str | None:
    """The "kind" a tbptt file's header names, or None (then load_arrays says what is wrong)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(archive[_files.HEADER].tobytes().decode("utf-8")).get("kind")
    except Exception:  # noqa: BLE001 - not a tbptt file: load_arrays says why
        return None


def _describe(path: str) -> list:
    if _file_kind(path) == "trainer":
        t = load_trainer(path)
        return [
            f"{path}: trainer checkpoint",
            f"  model: {t.model!r}",
            f"  parameters: {t.model.num_parameters:,}",
            f"  trainer: TBPTT(k1={t.k1}, k2={t.k2}), loss {t.loss}, {t.optimizer}, "
            f"clip_norm {t.clip_norm}, backend {t.backend}, B = {t.num_streams} streams",
            f"  progress: {t.updates:,} updates made, {t.pending_steps} steps pending",
        ]
    model, header = _folder.load_model(path)
    lines = [f"{path}: model", f"  model: {model!r}", f"  parameters: {model.num_parameters:,}"]
    meta = header.get("data")
    if meta:
        lines.append(f"  data: {meta.get('source')}: {_what(meta)}")
    for key in ("settings", "results"):
        if header.get(key):
            values = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in header[key].items()
                if v is not None
            )
            lines.append(f"  {key}: {values}")
    return lines


def _what(meta: dict) -> str | None:
    """What a model file's data were, in a few words."""
    kind = meta.get("kind")
    if kind == "text":
        return f"characters, vocabulary of {len(meta['vocabulary']['chars'])}"
    if kind == "series":
        scaled = (
            f"{meta['normalizer']}"
            if "normalizer" in meta
            else f"each series' own statistics ({len(meta.get('normalizers', []))} series)"
        )
        loss = "gaussian negative log-likelihood" if meta.get("likelihood") == "gaussian" else "MSE"
        return (
            f"next-step {loss} of the {'changes' if meta.get('difference') else 'values'}, "
            f"standardised with {scaled}"
        )
    if kind == "task":
        return "synthetic task"
    return kind
