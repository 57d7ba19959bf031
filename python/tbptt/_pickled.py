"""What `pickle` and `copy.deepcopy` carry of tbptt's objects: plain data only.

A model, a trainer and an online learner pickle (and deep-copy) through `__getstate__` /
`__setstate__`, with the state a checkpoint holds: the model's config and parameters, the
trainer's settings and its engine's snapshot in the schema both backends share
(`tbptt.engines.snapshot`), a learner's parameters and running statistics. Never the compiled
engine:
the unpickled trainer builds a new engine (the C++ one of whatever instruction-set module the
process that loads it runs, or the NumPy reference) and restores the snapshot into it, so its
parameter views alias its own model's array, and it goes on as the original would.

Every state is a dict tagged with what it is and the format it was written in; a format newer
than this tbptt reads is refused with a ValueError that says so (never a crash). Files are
another matter: `model.save` / `trainer.save` write tbptt's own format, with no pickle in it.
"""

from __future__ import annotations

from typing import Any, Dict

FORMAT = 1  # the pickled state's layout; raise it when the layout changes (and read the older)


def state(kind: str, **entries: Any) -> Dict[str, Any]:
    """The pickled state of a `kind` ("tbptt.Trainer", ...): its entries, tagged."""
    return {"tbptt": kind, "format": FORMAT, **entries}


def check(state: Any, kind: str) -> Dict[str, Any]:
    """`state` if it is the pickled state of a `kind` in a format this tbptt reads; else a
    TypeError (not such a state) or a ValueError (written by a newer tbptt)."""
    if not isinstance(state, dict) or state.get("tbptt") != kind:
        raise TypeError(f"not the pickled state of a {kind}: got {type(state).__name__}")
    version = state.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"the pickled state of a {kind} has no valid format number: {version!r}")
    if version > FORMAT:
        from . import __version__

        raise ValueError(
            f"this {kind} was pickled by a newer tbptt (pickle format {version}; "
            f"tbptt {__version__} reads format {FORMAT} and older): upgrade tbptt "
            f"to load it"
        )
    return state


def refuse(what: str):
    """For the engines' `__reduce_ex__`: they hold process-local memory (the compiled engine) or
    views into their model's parameters, so they travel only inside their trainer."""
    raise TypeError(
        f"{what} cannot be pickled or copied on its own: pickle or copy.deepcopy the "
        f"tbptt.Trainer, which rebuilds its engine from a snapshot"
    )
