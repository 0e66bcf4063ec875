"""timm's generic model checks (timm ``tests/test_models.py``), adapted to our presets and registry.

Every registered preset: built by ``timm.create_model``, forward / backward, batch-1 vs batch-2, non-square and
channels-last input, ``num_classes=0``, ``reset_classifier``, ``forward_head(pre_logits=True)``,
``pretrained_cfg``, ``feature_info`` (against timm's ``features_only`` wrapper) and gradient checkpointing.
``torch.jit.script``, ``torch.fx.symbolic_trace`` and ``torch.export`` on S and the three CPU presets (M and L
are S with more blocks: the same code), each with the input checks still raising in the traced module.
ImageNet-sized presets run at 56 px (a multiple of their 14-pixel grid) to keep the module fast.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.fx
from fixtures import single_thread  # noqa: F401 (fixture)

import sequencer_mini as sm
from sequencer_mini.models.sequencer2d import MODELS, Sequencer2D

timm = pytest.importorskip("timm")
from sequencer_mini.interop.timm_models import TIMM_NAMES  # noqa: E402 (needs timm)

pytestmark = pytest.mark.usefixtures("single_thread")

OURS_BY_TIMM = dict(TIMM_NAMES)
TRACED = ["sm_sequencer2d_s", "sequencer2d_mini28", "sequencer2d_fast28", "sequencer2d_mini32"]


def side_of(model: Sequencer2D) -> int:
    """The preset's own input side, or 56 px for the ImageNet models (speed; any multiple of 14 is valid)."""
    side = model.pretrained_cfg["input_size"][-1]
    return 56 if side == 224 else side


def images(model: Sequencer2D, batch: int = 2, height: int | None = None, width: int | None = None) -> torch.Tensor:
    side = side_of(model)
    torch.manual_seed(1)
    return torch.randn(batch, model.in_chans, height or side, width or side)


@pytest.fixture(scope="module", params=sorted(TIMM_NAMES))
def timm_name(request) -> str:
    return request.param


def build(name: str, **kwargs) -> Sequencer2D:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a registry name clash would warn
        return timm.create_model(name, **kwargs)


@pytest.fixture(scope="module")
def built(timm_name) -> Sequencer2D:
    """``build(timm_name)`` once per preset, in eval mode, for the checks that only read it (the others build their
    own variant, or change a deep copy): building the ImageNet presets is most of this module's time."""
    return build(timm_name).eval()


# ----------------------------------------------------------------------------- registry and interface

def test_registry_lists_ours_without_replacing_timms():
    listed = set(timm.list_models("*sequencer2d*"))
    assert set(TIMM_NAMES) <= listed
    assert type(timm.create_model("sequencer2d_s")).__module__ == "timm.models.sequencer"  # timm's own, untouched


def test_create_model_is_our_preset_with_the_same_weights(timm_name, built):
    model = built
    torch.manual_seed(0)
    ours = MODELS[OURS_BY_TIMM[timm_name]]()
    assert isinstance(model, Sequencer2D)
    theirs = model.state_dict()
    assert list(theirs) == list(ours.state_dict())
    assert all(torch.equal(theirs[k], v) for k, v in ours.state_dict().items())
    cfg = model.pretrained_cfg
    assert cfg is model.default_cfg and cfg["architecture"] == timm_name
    assert cfg["input_size"][0] == model.in_chans and cfg["num_classes"] == model.num_classes
    assert len(cfg["mean"]) == len(cfg["std"]) == model.in_chans
    data = timm.data.resolve_data_config(model=model)
    assert data["input_size"] == cfg["input_size"] and data["interpolation"] in ("bicubic", "bilinear")


def test_forward_backward_and_batch_independence(timm_name):
    model = build(timm_name, num_classes=7)
    x = images(model)
    # timm's check: every parameter gets a gradient. The zero-initialised head (official init) would block the
    # gradient of everything below it, so give it weights first.
    torch.nn.init.normal_(model.head.fc.weight, std=0.02)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        both = model(x)
        one = model(x[:1])
    torch.testing.assert_close(one, both[:1], rtol=1e-4, atol=1e-5)


def test_non_square_and_channels_last(built):
    model = built
    side = side_of(model)
    x = images(model, height=side, width=2 * side)
    with torch.no_grad():
        out = model(x)
        out_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, model.num_classes)
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-5)


def test_num_classes_zero_returns_pooled_features(timm_name):
    model = build(timm_name, num_classes=0).eval()
    x = images(model)
    with torch.no_grad():
        feats = model(x)
        fmap = model.forward_features(x)
    assert feats.shape == (2, model.num_features) == (2, model.head_hidden_size)
    torch.testing.assert_close(feats, fmap.mean(dim=(1, 2)))
    assert model.get_classifier().__class__ is torch.nn.Identity


def test_reset_classifier_and_pre_logits(built):
    model = copy.deepcopy(built)  # the classifier is replaced below
    x = images(model)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.num_classes == 5
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, global_pool="")  # timm: no pooling, the (B, H, W, C) map
        fmap = model(x)
    assert fmap.dim() == 4 and fmap.shape[-1] == model.num_features
    with pytest.raises(ValueError, match="global_pool must be 'avg'"):
        model.reset_classifier(3, global_pool="max")


def test_feature_info_matches_timms_features_only(timm_name, built):
    model = built
    info = model.feature_info
    assert [f["module"] for f in info] == [f"stages.{i}" for i in range(len(model.stages))]
    features = build(timm_name, features_only=True).eval()
    x = images(model)
    with torch.no_grad():
        maps = features(x)
    assert len(maps) == len(info)
    for fmap, f in zip(maps, info, strict=True):  # NHWC, as the model's blocks
        assert fmap.shape == (2, x.shape[-2] // f["reduction"], x.shape[-1] // f["reduction"], f["num_chs"])
    assert features.feature_info.channels() == [f["num_chs"] for f in info]


def test_grad_checkpointing_gives_the_same_loss_and_gradients(timm_name):
    model = build(timm_name, drop_path_rate=0.1)
    torch.nn.init.normal_(model.head.fc.weight, std=0.02)
    x = images(model)

    def loss_and_grads():
        torch.manual_seed(3)  # the same drop-path draws: checkpointing replays the RNG state
        model.zero_grad()
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    model.train()
    plain_loss, plain = loss_and_grads()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    ckpt_loss, ckpt = loss_and_grads()
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for name, grad in plain.items():
        torch.testing.assert_close(ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- tracing

def traced(kind: str, model: Sequencer2D, x: torch.Tensor):
    if kind == "script":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
            warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")
            return torch.jit.script(model)
    if kind == "fx":
        return torch.fx.symbolic_trace(model)
    with warnings.catch_warnings():
        # nn.LSTM re-assigns its _flat_weights list while traced; harmless here (the output is compared below)
        warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights", category=UserWarning)
        return torch.export.export(model, (x,)).module()


@pytest.mark.parametrize("kind", ["script", "fx", "export"])
@pytest.mark.parametrize("name", TRACED)
def test_traced_model_matches_and_keeps_its_checks(name, kind):
    model = build(name).eval()
    x = images(model)
    torch.nn.init.normal_(model.head.fc.weight, std=0.02)  # non-zero logits, so equality means something
    with torch.no_grad():
        expected = model(x)
        graph = traced(kind, model, x)
        torch.testing.assert_close(graph(x), expected, rtol=1e-5, atol=1e-6)
    if kind == "export":
        # An exported program is specialised to the example's shape and dtype; anything else fails its guards.
        with pytest.raises(Exception, match="Guard failed|[Ee]xpected input"):
            graph(x[..., 1:])
        return
    # script raises torch.jit.Error (a RuntimeError) carrying the ValueError's message; fx raises the ValueError.
    error = ValueError if kind == "fx" else torch.jit.Error
    with pytest.raises(error, match="multiples of"):
        graph(x[..., 1:])
    with pytest.raises(error, match="non-empty batch"):
        graph(x[:0])
    with pytest.raises(error, match="floating-point images"):
        graph(x.to(torch.uint8))
    with pytest.raises(error, match=f"expected {model.in_chans} input channels"):
        graph(torch.cat([x, x], dim=1))


# ----------------------------------------------------------------------------- input and argument checks

@pytest.mark.parametrize("name", ["sequencer2d_mini28", "sm_sequencer2d_s"])
def test_bad_inputs_name_the_expected_shape_and_dtype(name):
    model = build(name).eval()
    x = images(model)
    c = model.in_chans
    with pytest.raises(ValueError, match=rf"non-empty batch of images \(B ≥ 1, {c}, H, W\), got shape \(0, {c},"):
        model(x[:0])
    for dtype in (torch.uint8, torch.int64):
        with pytest.raises(ValueError, match=rf"floating-point images .* \(B, {c}, H, W\), got dtype {dtype}"):
            model(x.to(dtype))
    with pytest.raises(ValueError, match=rf"expected images \(B, {c}, H, W\), got a 3-D tensor"):
        model(x[0])


@pytest.mark.parametrize("rate", [2.0, -0.1, 1.0])
def test_drop_path_rate_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match=rf"drop_path_rate must be in \[0, 1\).*got {rate}"):
        sm.sequencer2d_mini28(drop_path_rate=rate)
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        timm.create_model("sequencer2d_mini28", drop_path_rate=rate)


def test_zero_patch_size_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"patch_sizes must be positive integers .* got \[0, 2\]"):
        sm.sequencer2d_mini28(patch_sizes=(0, 2))
    with pytest.raises(ValueError, match=r"num_classes >= 0"):
        sm.sequencer2d_mini28(num_classes=-1)


# ----------------------------------------------------------------------------- baselines and the timm script runner

@pytest.mark.parametrize("name", ["small_cnn", "small_vit"])
def test_baselines_have_the_same_head_interface(name):
    from sequencer_mini.models.baselines import BASELINES
    torch.manual_seed(0)
    model = BASELINES[name]().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert logits.shape == (2, 10) and pre.shape == (2, model.num_features)
        torch.testing.assert_close(model.head(pre), logits)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(4)
        assert model(x).shape == (2, 4)
    zero = BASELINES[name](num_classes=0)
    assert not any(k.startswith("head") for k in zero.state_dict())


def test_timm_script_runner_sees_our_models(tmp_path, capsys):
    from sequencer_mini.interop.timm_models import main
    script = tmp_path / "script.py"
    script.write_text("import sys, timm\nmodel = timm.create_model(sys.argv[1], num_classes=3)\n"
                      "print(type(model).__name__, model.num_classes, sys.argv[0].endswith('script.py'))\n")
    main([str(script), "sequencer2d_fast28"])
    assert capsys.readouterr().out.strip() == "Sequencer2D 3 True"
