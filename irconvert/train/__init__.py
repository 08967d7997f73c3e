"""Fine-tuning binarized models: the training loop and what it is made of.

Submodules are imported by callers (:mod:`irconvert.train.run` for
:func:`~irconvert.train.run.fit`), so importing this package stays cheap.
The recipe dataclasses and recipe files are :mod:`irconvert.config`'s.
"""
