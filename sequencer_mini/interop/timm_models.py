"""Our Sequencer2D presets in timm's model registry, so ``timm.create_model`` and timm's scripts can build them.

Importing this module registers (``import sequencer_mini`` alone does not import timm, which costs every process
that does not need it about two seconds):

=========================  ==========================================================================
timm name                  our preset
=========================  ==========================================================================
``sequencer2d_mini28``     :func:`~sequencer_mini.models.sequencer2d.sequencer2d_mini28` (Fashion-MNIST, 28 px)
``sequencer2d_fast28``     :func:`~sequencer_mini.models.sequencer2d.sequencer2d_fast28` (Fashion-MNIST, 28 px)
``sequencer2d_mini32``     :func:`~sequencer_mini.models.sequencer2d.sequencer2d_mini32` (CIFAR, 32 px)
``sm_sequencer2d_s/m/l``   :func:`~sequencer_mini.models.sequencer2d.sequencer2d_s` … (ImageNet, 224 px)
=========================  ==========================================================================

timm has its own ``sequencer2d_s/m/l``; ours take the prefix ``sm_`` (sequencer_mini) so that neither
registration replaces the other. With ``pretrained=True`` the S/M/L entries load the authors' ImageNet weights
that timm publishes (``timm/sequencer2d_s.in1k`` …): the state-dict keys are the same.

timm's ``train.py`` and ``validate.py`` know only the models registered when they start, so run them through
this module, which registers ours and then runs the script with the remaining arguments::

    torchrun --nproc_per_node=8 -m sequencer_mini.interop.timm_models path/to/pytorch-image-models/train.py \\
        --model sm_sequencer2d_s ...

Every entry goes through timm's ``build_model_with_cfg``, so ``features_only=True``, ``pretrained_cfg`` and
``checkpoint_path`` behave as for timm's own models. As timm's ``Sequencer2d``:

* **input sizes** are floored by the strided patch convolutions (``strict_img_size=False``): any side of at least
  ``prod(patch_sizes)`` runs, so timm's tests and scripts may feed 128 px to S/M/L. ``strict_img_size=True``
  gives the refusal of sides off the patch grid that :mod:`sequencer_mini.models.sequencer2d`'s own constructors,
  and the book, use by default.
* ``features_only=True`` returns stages 0-2 by default (timm's ``out_indices``), all stages of the one- and
  two-stage presets; an ``out_indices`` past the last stage is a ValueError naming the stages there are.
* ``in_chans`` other than the preset's (timm's ``train.py`` passes ``in_chans=3`` unless told ``--in-chans``)
  builds that stem, and the model's ``pretrained_cfg`` says so: ``input_size`` starts with the new channel
  count and mean/std have one entry per channel, so timm's data pipeline loads matching images.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.sequencer import checkpoint_filter_fn

from sequencer_mini.models.sequencer2d import MODELS, PRESETS, Sequencer2D, preset_config, pretrained_cfg_for

__all__ = ["TIMM_NAMES", "main"]

#: timm name -> our preset name, read from the presets table (``Preset.timm_name``).
TIMM_NAMES: dict[str, str] = {preset.timm_name: name for name, preset in PRESETS.items()}


def _timm_cfg(timm_name: str) -> dict[str, Any]:
    preset = TIMM_NAMES[timm_name]
    cfg = pretrained_cfg_for(preset, preset_config(preset))
    cfg.pop("architecture", None)
    cfg.pop("tag", None)
    return cfg


def _cfg_key(timm_name: str) -> str:
    # Models with weights (the ImageNet presets) get timm's ``.in1k`` tag; the hub id is complete, so timm does
    # not rewrite it.
    return f"{timm_name}.in1k" if PRESETS[TIMM_NAMES[timm_name]].dataset == "imagenet" else timm_name


default_cfgs = generate_default_cfgs({_cfg_key(n): _timm_cfg(n) for n in TIMM_NAMES})


#: timm's Sequencer2d returns stages 0-2 from ``features_only`` unless told otherwise.
DEFAULT_OUT_INDICES = (0, 1, 2)


def _out_indices(timm_name: str, n_stages: int, out_indices: Any) -> Any:
    """timm's default ``out_indices`` cut to the stages there are; a request past them is a ValueError."""
    if out_indices is None:
        return tuple(i for i in DEFAULT_OUT_INDICES if i < n_stages)
    wanted = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    bad = (not wanted or (isinstance(out_indices, int) and not 0 < out_indices <= n_stages)
           or (not isinstance(out_indices, int) and any(not -n_stages <= i < n_stages for i in wanted)))
    if bad:
        raise ValueError(
            f"{timm_name} has {n_stages} stage(s), feature levels 0..{n_stages - 1}; out_indices={out_indices!r} "
            f"asks for others (an int n takes the last n stages, 1 to {n_stages})"
        )
    return out_indices


def _create(timm_name: str, pretrained: bool = False, **kwargs: Any) -> Sequencer2D:
    name = TIMM_NAMES[timm_name]
    n_stages = len(preset_config(name).layers)
    out_indices = _out_indices(timm_name, n_stages, kwargs.pop("out_indices", None))
    kwargs.setdefault("strict_img_size", False)  # timm's and the official code's behaviour: floor the sides
    model = build_model_with_cfg(
        MODELS[name],
        timm_name,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,  # also converts the official release's keys
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )
    in_chans = kwargs.get("in_chans")
    if in_chans is not None and in_chans != model.pretrained_cfg["input_size"][0]:
        # The registry's cfg describes the preset's channels; this model was built for others. (After the weights
        # loaded: timm adapts a pretrained stem from the registry's channel count.)
        ours = pretrained_cfg_for(name, preset_config(name, in_chans=in_chans))
        cfg = dict(model.pretrained_cfg, input_size=ours["input_size"], mean=ours["mean"], std=ours["std"])
        model.pretrained_cfg = model.default_cfg = cfg
    return model


def _entry(timm_name: str) -> Callable[..., Sequencer2D]:
    def entry(pretrained: bool = False, **kwargs: Any) -> Sequencer2D:
        return _create(timm_name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = timm_name  # register_model registers a function under its name
    entry.__module__ = __name__
    entry.__doc__ = f"timm entry point for sequencer_mini's ``{TIMM_NAMES[timm_name]}``."
    return entry


# ``python -m sequencer_mini.interop.timm_models`` runs this file as ``__main__``, and the import at the end
# registers the module under its own name: register only there, once.
if __name__ != "__main__":
    for _name in TIMM_NAMES:
        globals()[_name] = register_model(_entry(_name))


def main(argv: list[str] | None = None) -> None:
    """``python -m sequencer_mini.interop.timm_models SCRIPT [ARGS...]``: run a timm script with our models
    registered."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m sequencer_mini.interop.timm_models SCRIPT [ARGS...]\nruns SCRIPT (e.g. timm's "
              "train.py or validate.py) with sequencer_mini's models in timm's registry: " + ", ".join(TIMM_NAMES))
        return
    script, *rest = args
    saved, sys.argv = sys.argv, [script, *rest]  # the script parses its own command line
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved


if __name__ == "__main__":
    import sequencer_mini.interop.timm_models  # noqa: F401 (the registration, in case the package did not import timm)

    main()
