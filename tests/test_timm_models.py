"""timm's generic model checks (timm ``tests/test_models.py``), adapted to our presets and registry.

Every registered preset: built by ``timm.create_model``, forward / backward, batch-1 vs batch-2, non-square and
channels-last input, ``num_classes=0``, ``reset_classifier``, ``forward_head(pre_logits=True)``,
``pretrained_cfg``, ``feature_info`` (against timm's ``features_only`` wrapper) and gradient checkpointing.
``torch.jit.script``, ``torch.fx.symbolic_trace`` and ``torch.export`` on S and the three CPU presets (M and L
are S with more blocks: the same code), each with the input checks still raising in the traced module; FX then
TorchScript (equal to eager) on the CPU presets; ``forward_intermediates``, ``prune_intermediate_layers`` and
``features_only`` against the eager stages; FX feature extractors and ``features_only`` wrappers keeping the input
checks; the meta device; ``in_chans`` overrides. timm's own ``tests/test_models.py`` runs in
``tests/test_timm_upstream.py``. ImageNet-sized presets run at 56 px (a multiple of their 14-pixel grid) to keep
the module fast.
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
    """timm's default ``out_indices`` (stages 0-2; all stages of the 1- and 2-stage presets), each map equal to the
    model's own stage output."""
    model = built
    info = model.feature_info
    assert [f["module"] for f in info] == [f"stages.{i}" for i in range(len(model.stages))]
    features = build(timm_name, features_only=True).eval()
    # ``build`` seeds every build alike: the wrapped model has ``model``'s weights
    x = images(model)
    with torch.no_grad():
        maps = features(x)
        _, eager = model.forward_intermediates(x, output_fmt="NHWC")
    default = min(3, len(info))  # timm's Sequencer2d: out_indices=(0, 1, 2)
    assert len(maps) == default
    for fmap, f, want in zip(maps, info[:default], eager[:default], strict=True):  # NHWC, as the model's blocks
        assert fmap.shape == (2, x.shape[-2] // f["reduction"], x.shape[-1] // f["reduction"], f["num_chs"])
        torch.testing.assert_close(fmap, want, rtol=0, atol=0)
    assert features.feature_info.channels() == [f["num_chs"] for f in info[:default]]
    everything = build(timm_name, features_only=True, out_indices=tuple(range(len(info))))
    assert len(everything.feature_info.channels()) == len(info)
    with pytest.raises(ValueError, match=rf"has {len(info)} stage\(s\), feature levels 0..{len(info) - 1}"):
        build(timm_name, features_only=True, out_indices=(len(info),))


def test_forward_intermediates_equals_eager_and_prune_keeps_it(timm_name, built):
    model = built
    x = images(model, height=side_of(model) + 3)  # off the patch grid: timm's entries floor it
    n = len(model.stages)
    with torch.no_grad():
        maps, feats = [], model.stem(x)
        for stage in model.stages:
            feats = stage(feats)
            maps.append(feats)
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and torch.equal(final, model.norm(maps[-1]))
        assert [tuple(t.shape) for t in inter] == [tuple(m.permute(0, 3, 1, 2).shape) for m in maps]  # NCHW
        assert all(torch.equal(a, b.permute(0, 3, 1, 2)) for a, b in zip(inter, maps, strict=True))
        only = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NHWC", intermediates_only=True)
        assert len(only) == 1 and torch.equal(only[0], final)
        if n > 1:
            early, first = model.forward_intermediates(x, indices=1, stop_early=True, output_fmt="NHWC")
            assert torch.equal(first[0], maps[-1])
            early, first = model.forward_intermediates(x, indices=[0], stop_early=True, output_fmt="NHWC")
            assert torch.equal(early, maps[0]) and torch.equal(first[0], maps[0])  # stopped: no final norm
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([0]) == [0]
    assert len(pruned.stages) == 1 and pruned.num_classes == 0
    assert pruned.num_features == pruned.head_hidden_size == model.feature_info[0]["num_chs"]
    with torch.no_grad():
        assert torch.equal(pruned.forward_intermediates(x, indices=[0], intermediates_only=True)[0],
                           inter[0])
        # no pooling, no classifier: the stage's map; no norm either where stages were cut (timm's rule)
        assert torch.equal(pruned(x), maps[0] if n > 1 else final)
        pruned.reset_classifier(3, "avg")
        assert pruned(x).shape == (2, 3)


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
    if kind == "fx_script":  # FX, then TorchScript (timm's test_model_forward_fx_torchscript does this)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")
            return torch.jit.script(torch.fx.symbolic_trace(model))
    with warnings.catch_warnings():
        # nn.LSTM re-assigns its _flat_weights list while traced; harmless here (the output is compared below)
        warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights", category=UserWarning)
        return torch.export.export(model, (x,)).module()


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n in TRACED for k in ("script", "fx", "fx_script", "export")
                                             if (n, k) != ("sm_sequencer2d_s", "fx_script")])  # S: timm's own test
def test_traced_model_matches_and_keeps_its_checks(name, kind):
    """timm's entries floor sides off the patch grid (``strict_img_size=False``), traced too; sizes under one token,
    empty batches, integer images and wrong channel counts are refused by the traced module as by the model."""
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
    with torch.no_grad():
        torch.testing.assert_close(graph(x[..., 1:]), model(x[..., 1:]), rtol=1e-5, atol=1e-6)  # floored alike
    # script raises torch.jit.Error (a RuntimeError) carrying the ValueError's message; fx raises the ValueError.
    error = ValueError if kind == "fx" else torch.jit.Error
    with pytest.raises(error, match=rf"at least {model.reduction} \(one token at the last stage\)"):
        graph(x[..., : model.reduction - 1])
    with pytest.raises(error, match="non-empty batch"):
        graph(x[:0])
    with pytest.raises(error, match="floating-point images"):
        graph(x.to(torch.uint8))
    with pytest.raises(error, match=f"expected {model.in_chans} input channels"):
        graph(torch.cat([x, x], dim=1))


@pytest.mark.parametrize("kind", ["script", "fx", "fx_script"])
def test_strict_model_keeps_the_refusal_when_traced(kind):
    model = build("sequencer2d_mini28", strict_img_size=True).eval()
    x = images(model)
    graph = traced(kind, model, x)
    with pytest.raises(ValueError if kind == "fx" else torch.jit.Error, match="multiples of 4, got 28×27"):
        graph(x[..., 1:])


def _fx_extract(model: torch.nn.Module):
    """The final node cut out with torchvision's feature extractor and timm's tracer settings, as timm's FX tests
    and ``features_only`` with ``feature_cls='fx'`` do; the graph is cleaned of nodes that feed no output."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    _, nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("name", ["sequencer2d_mini28", "sequencer2d_fast28"])
def test_fx_feature_extractors_and_features_only_keep_the_input_checks(name):
    """Extracted graphs and timm's ``features_only`` wrappers (which run the stem and the stages themselves) check
    their input at the stem: the check's result feeds the convolution, so the extractor's dead-code pass keeps it."""
    model = build(name).eval()
    x = images(model)
    extracted = _fx_extract(model)
    assert any("check_images" in str(node.target) for node in extracted.graph.nodes)
    strict = _fx_extract(build(name, strict_img_size=True).eval())
    fx_wrapped = build(name, features_only=True, feature_cls="fx").eval()
    hooked = build(name, features_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(next(iter(extracted(x).values())), model(x))
    for net in (extracted, fx_wrapped, hooked):
        with pytest.raises(ValueError, match="floating-point images"):
            net(x.to(torch.uint8))
        with pytest.raises(ValueError, match="non-empty batch"):
            net(x[:0])
        with pytest.raises(ValueError, match=f"expected {model.in_chans} input channels"):
            net(torch.cat([x, x], dim=1))
        with pytest.raises(ValueError, match="at least"):
            net(x[..., :3])
    with pytest.raises(ValueError, match="multiples of 4"):
        strict(x[..., 1:])


def test_meta_device_and_dtype_factory_arguments():
    """timm's factory arguments: built on the meta device (no memory, no numbers), or in another dtype."""
    model = build("sm_sequencer2d_l", device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    half = build("sequencer2d_mini28", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.device("meta"):
        assert build("sequencer2d_mini28").stem.proj.weight.is_meta


def test_in_chans_override_keeps_the_cfg_consistent():
    """timm's train.py passes ``in_chans=3`` unless told otherwise: the cfg then describes 3-channel input, so that
    timm's data pipeline loads RGB images for the 3-channel stem."""
    model = build("sequencer2d_mini28", in_chans=3)
    cfg = model.pretrained_cfg
    assert model.in_chans == 3 and cfg["input_size"] == (3, 28, 28) and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert timm.data.resolve_data_config(model=model)["input_size"] == (3, 28, 28)
    grey = build("sm_sequencer2d_s", in_chans=1, features_only=True)
    assert grey.pretrained_cfg["input_size"] == (1, 224, 224) and len(grey.pretrained_cfg["mean"]) == 1
    assert build("sequencer2d_mini28").pretrained_cfg["input_size"] == (1, 28, 28)


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
