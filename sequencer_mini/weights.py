"""Chapter 5: loading weights from timm and from the official Sequencer release.

* timm's ``sequencer2d_{s,m,l}`` state dicts already use our names: load them with ``strict=True``.
* The official release (``github.com/okojoalg/sequencer/releases``) names blocks ``blocks.{stage}.{block}``,
  keeps each stage's downsampling as the extra last entry ``blocks.{stage}.{layers[stage]}.down``, and calls
  the classifier ``head``. :func:`convert_official_state_dict` renames them as timm's ``checkpoint_filter_fn``
  does.
* :func:`pretrained` fetches the official ImageNet-1k weights through timm (Hugging Face Hub, ``timm/…in1k``),
  which needs internet, and otherwise fails with a message saying what it tried.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .sequencer2d import MODELS, Sequencer2D

__all__ = ["convert_official_state_dict", "load_weights", "pretrained", "OFFICIAL_URLS"]

#: The official release checkpoints (ImageNet-1k, 224×224), as listed in the official README.
OFFICIAL_URLS = {
    name: f"https://github.com/okojoalg/sequencer/releases/download/weights/{name}.pth"
    for name in ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l")
}

_DOWN = re.compile(r"^blocks\.(\d+)\.(\d+)\.down\.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict", "model_ema"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            return state_dict[key]
    return state_dict


def convert_official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename official-release keys to ours/timm's; a state dict already in that form passes through.

    ``blocks.i.j.down.*`` → ``stages.{i+1}.downsample.down.*``; ``blocks.i.j.*`` → ``stages.i.blocks.j.*``;
    ``head.*`` → ``head.fc.*``. A ``'model'`` or ``'state_dict'`` wrapper is removed.
    """
    state_dict = _unwrap(state_dict)
    if "stem.proj.weight" in state_dict and any(k.startswith("stages.") for k in state_dict):
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = _DOWN.sub(lambda m: f"stages.{int(m.group(1)) + 1}.downsample.down.", key)
        key = _BLOCK.sub(r"stages.\1.blocks.\2.", key)
        if key.startswith("head."):
            key = "head.fc." + key[len("head.") :]
        out[key] = value
    return out


def load_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Load a timm or official state dict strictly; mismatches raise a RuntimeError that lists them.

    Missing keys, unexpected keys and shape mismatches are all reported at once with the model's and the
    checkpoint's shapes, so that a wrong preset (S vs M) or a wrong ``num_classes`` is obvious.
    """
    sd = convert_official_state_dict(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [
        f"{k}: model {tuple(own[k].shape)} vs checkpoint {tuple(sd[k].shape)}"
        for k in own
        if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        raise RuntimeError(
            f"state dict does not fit {type(model).__name__} ({len(own)} tensors expected, {len(sd)} given): "
            + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=True)
    return model


def pretrained(name: str = "sequencer2d_s", checkpoint: str | Path | None = None, **kwargs: Any) -> Sequencer2D:
    """The official ImageNet-1k Sequencer2D weights in our model.

    Tries, in order: a local ``checkpoint`` file if given (official or timm format); timm's
    ``create_model(name, pretrained=True)`` (downloads ``timm/{name}.in1k`` from the Hugging Face Hub); the
    official GitHub release file. Needs internet unless ``checkpoint`` is given (e.g. on Colab). Raises a
    RuntimeError naming everything it tried when none works.
    """
    if name not in OFFICIAL_URLS:
        raise ValueError(f"pretrained weights exist for {sorted(OFFICIAL_URLS)}, not {name!r}")
    model = MODELS[name](**kwargs)
    tried: list[str] = []
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise RuntimeError(f"checkpoint file {str(path)!r} does not exist")
        return load_weights(model, torch.load(path, map_location="cpu", weights_only=True))  # type: ignore[return-value]
    hub = f"timm.create_model({name!r}, pretrained=True) [Hugging Face Hub 'timm/{name}.in1k']"
    try:
        _check_reachable("huggingface.co")  # fail in a second offline instead of after minutes of retries
        import timm

        ref = timm.create_model(name, pretrained=True)
        return load_weights(model, ref.state_dict())  # type: ignore[return-value]
    except RuntimeError as err:
        if "does not fit" in str(err):
            raise
        tried.append(f"{hub}: {_short(err)}")
    except Exception as err:  # no internet, no timm, hub offline: say so and try the next source
        tried.append(f"{hub}: {_short(err)}")
    url = OFFICIAL_URLS[name]
    try:
        _check_reachable("github.com")
        sd = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
        return load_weights(model, sd)  # type: ignore[return-value]
    except Exception as err:
        tried.append(f"torch.hub.load_state_dict_from_url({url!r}): {_short(err)}")
    raise RuntimeError(
        f"could not load the official {name} weights; this needs internet (e.g. Colab) or a local file via "
        f"pretrained({name!r}, checkpoint='path/to/{name}.pth'). Tried:\n  - " + "\n  - ".join(tried)
    )


def _check_reachable(host: str, timeout: float = 3.0) -> None:
    """Raise ConnectionError unless ``host:443`` accepts a TCP connection within ``timeout`` seconds.

    With ``SEQUENCER_OFFLINE`` set (the tests) it raises at once, without touching the network.
    """
    from .data import download_allowed

    if not download_allowed(None):
        raise ConnectionError(f"downloads are disabled (SEQUENCER_OFFLINE is set), so {host} is not tried")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"no network connection to {host} ({err})") from err


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text[:300]
