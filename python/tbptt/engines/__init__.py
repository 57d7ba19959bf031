"""The engines: what runs a model's numbers, below the model classes and the trainer.

`native` finds the compiled core (`_core_<isa>`), `cpp` adapts it to the engine protocol
(`tbptt.contract.Engine`), `reference` is the NumPy reference, `snapshot` the one schema of an
engine's state both speak and `old_files` the conversion of older forms of it, once, at load;
`threads` sets the compiled core's threads.
"""
