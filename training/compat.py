"""Compatibility layer that lets ohmeow-blurr 1.0.5 (2022) run on fastai 2.8 / fastcore ≥1.8 / datasets ≥3.

Import blurr only through this module:

    from training.compat import blurr_text
    blurr_text.TextBlock, blurr_text.Blearner, ...

What it mends, and why (see ../shared/DESIGN.md):
1. fastcore ≥1.8 removed `typedispatch`; blurr's modules use it as a decorator for `show_batch` and
   `show_results`. fastai now registers those with plum's `dispatch`, which matches *positional* arguments
   only, while fastai passes blurr's extra parameters (`dataloaders=`, `learner=`) by keyword. We provide a
   `typedispatch` that gives those parameters a default and registers the function with fastai's `dispatch`,
   so the plum function `show_batch` gains blurr's `TextInput` method.
2. `datasets.load_metric` is gone in datasets ≥3, and blurr's question-answering module calls
   `load_metric("squad")` at import time (a download, impossible offline). We install a stand-in that
   defers the error to the moment a metric is actually used — never for classification.
3. `fastai.text.all` must be imported *before* blurr: otherwise fastai's `TextBlock` shadows blurr's in
   any star-import namespace. We import it first here.
"""
from __future__ import annotations

import inspect
import importlib
from types import SimpleNamespace

import config

config.use_offline_hub()   # before fastai/blurr import transformers and datasets

import fastai.text.all  # noqa: F401  (must come before blurr, see 3.)
import fastcore.all
from fastai.imports import dispatch

_KEYWORD_PASSED = ("dataloaders", "learner")


def typedispatch(f):
    """fastcore's old decorator, rebuilt on plum: defaults for keyword-passed parameters, then `dispatch`."""
    params = list(inspect.signature(f).parameters.values())
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    names = [p.name for p in positional]
    first = min((names.index(n) for n in _KEYWORD_PASSED if n in names), default=None)
    if first is not None:
        # every positional parameter from the first keyword-passed one on needs a default
        tail = positional[first:]
        f.__defaults__ = tuple(None if p.default is inspect.Parameter.empty else p.default for p in tail)
    return dispatch(f)


class _MetricUnavailable:
    """Stand-in for `datasets.load_metric(name)`: importing works, using it explains what happened."""

    def __init__(self, name: str):
        self.name = name

    def compute(self, *args, **kwargs):
        raise RuntimeError(
            f"datasets.load_metric({self.name!r}) does not exist in this datasets version and metrics cannot be "
            "downloaded offline; blurr's question-answering/seq2seq metrics are not supported by this project"
        )


def _install() -> None:
    if not hasattr(fastcore.all, "typedispatch"):
        fastcore.all.typedispatch = typedispatch
    import datasets

    if not hasattr(datasets, "load_metric"):
        datasets.load_metric = _MetricUnavailable


_install()

_data = importlib.import_module("blurr.text.data.core")
_modeling = importlib.import_module("blurr.text.modeling.core")
_utils = importlib.import_module("blurr.text.utils")

#: The blurr names this project uses, in one namespace.
blurr_text = SimpleNamespace(
    TextBlock=_data.TextBlock,
    BatchTokenizeTransform=_data.BatchTokenizeTransform,
    TextInput=_data.TextInput,
    Blearner=_modeling.Blearner,
    BaseModelWrapper=_modeling.BaseModelWrapper,
    BaseModelCallback=_modeling.BaseModelCallback,
    blurr_splitter=_modeling.blurr_splitter,
    get_hf_objects=_utils.get_hf_objects,
    data=_data,
    modeling=_modeling,
)
