"""timm's own model tests (timm ``tests/test_models.py``, the installed version's) on every preset we register in
timm, beside timm's ``sequencer2d_s`` as the control.

The file is timm's, unchanged: ``python tools/timm_upstream.py`` puts it in ``tests/_vendor/`` from timm's
source distribution on PyPI, pinned by SHA-256 (the repository keeps no copy; this module skips where it is
missing, and fails under ``CI``, where ``.ci/run`` fetches it). Each of its generic model tests is called here on
each model, whether or not timm's own name filters would select it (``sm_sequencer2d_s`` is not matched by timm's
``sequencer2d_*`` filter, the mini presets are; timm selects its intermediates tests by module, which ours are
not in), with timm's batch sizes and its pretrained tests left out (they download weights).

What is changed, for time: the target input sizes, from timm's 96-384 px down to 64 px (``_get_input_size`` lets
a model with ``fixed_input_size=False`` take any), so that S/M/L run in seconds (64 px is not a multiple of 14: the
sides are floored, as timm's model floors them); the CPU presets run at their own 28 and 32 px. And the two cfg
tests build their models on the CPU (``cfg_device='cpu'``, the value timm's fixture takes on a torch without device
contexts) rather than on the meta device: an LSTM on the meta device runs through Python reference operators, one
per gate and time step, ten times slower than the CPU at 224 px, for timm's model as for ours
(``tests/test_timm_models.py`` builds the presets on the meta device). M and L are S with more blocks: their cases
are marked ``slow`` (``-m "not slow"`` leaves them out).

Expected failures, each strict (an unexpected pass fails too):

* the one- and two-stage presets in the two tests that assert ``len(feature_info) >= 3`` ("all models here should
  have at least 3 feature levels"): they have one or two stages, and their ``features_only`` and
  ``forward_intermediates`` return all of them (proved equal to eager in ``tests/test_timm_models.py``);
* the control in ``test_model_default_cfgs`` (timm's standard-model cfg test): timm's own cfg has
  ``pool_size=None``, and timm's selection leaves it out (``NON_STD_FILTERS``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)

timm = pytest.importorskip("timm")
from sequencer_mini.interop.timm_models import TIMM_NAMES  # noqa: E402 (needs timm; registers the presets)
from sequencer_mini.models.sequencer2d import PRESETS  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "_vendor" / f"timm-{timm.__version__}"
FETCH = "python tools/timm_upstream.py"


def _pinned_sha256() -> str:
    spec = importlib.util.spec_from_file_location("_timm_upstream_tool", ROOT / "tools" / "timm_upstream.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.PINS[timm.__version__]["from_sdist"]["tests/test_models.py"]


def _load_timm_tests():
    """timm's test module, imported once, after our presets are registered (its parametrisations read the registry
    at import). It switches TorchScript to the profiling executor without profiling, for the whole process; the
    old setting comes back here, and :func:`timm_jit_settings` applies timm's around each test."""
    path = UPSTREAM / "test_models.py"
    if not path.exists():
        message = f"timm's tests/test_models.py is not in {UPSTREAM.relative_to(ROOT)}: run `{FETCH}`"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    got, want = hashlib.sha256(path.read_bytes()).hexdigest(), _pinned_sha256()
    assert got == want, f"{path} has SHA-256 {got}, not the pinned {want}: run `{FETCH}` again"
    executor = torch._C._jit_set_profiling_executor(True)
    mode = torch._C._jit_set_profiling_mode(False)
    try:
        spec = importlib.util.spec_from_file_location("timm_upstream_test_models", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        with warnings.catch_warnings():
            # its CI markers (base, cfg, features, ...) are registered in timm's pyproject.toml, not here
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            spec.loader.exec_module(module)
    finally:
        torch._C._jit_set_profiling_executor(executor)
        torch._C._jit_set_profiling_mode(mode)
    return module


UP = _load_timm_tests()

CONTROL = "sequencer2d_s"  # timm's own
OURS = list(TIMM_NAMES)
#: timm's generic model tests and the batch size each is parametrised with in timm.
TESTS = {
    "test_model_forward": 1,
    "test_model_backward": 2,
    "test_model_default_cfgs": 1,
    "test_model_default_cfgs_non_std": 1,
    "test_model_forward_torchscript": 1,
    "test_model_forward_features": 1,
    "test_model_forward_intermediates_features": 1,
    "test_model_forward_intermediates": 1,
    "test_model_forward_fx": 1,
    "test_model_backward_fx": 2,
    "test_model_forward_fx_torchscript": 1,
}
SMALL_SIDE = 64
TARGETS = ["TARGET_FWD_SIZE", "TARGET_BWD_SIZE", "TARGET_JIT_SIZE", "TARGET_FFEAT_SIZE", "TARGET_FWD_FX_SIZE",
           "TARGET_BWD_FX_SIZE"]
FEWER_THAN_3 = {n for n in OURS if len(PRESETS[TIMM_NAMES[n]].config["layers"]) < 3}
NEEDS_3_LEVELS = ("test_model_forward_features", "test_model_forward_intermediates")


def timm_selects(test: str, model_name: str) -> bool:
    """Whether timm's own parametrisation of ``test`` lists ``model_name``."""
    for mark in getattr(getattr(UP, test), "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == "model_name":  # names, or names with tags (include_tags)
            return any(n == model_name or n.startswith(f"{model_name}.") for n in mark.args[1])
    return False


def _case(test: str, model_name: str):
    marks = []
    if model_name in FEWER_THAN_3 and test in NEEDS_3_LEVELS:
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError,
                                       reason="timm's test asserts >= 3 feature levels; this preset has "
                                              f"{len(PRESETS[TIMM_NAMES[model_name]].config['layers'])} stage(s)"))
    if model_name == CONTROL and test == "test_model_default_cfgs":
        marks.append(pytest.mark.xfail(strict=True, raises=TypeError,
                                       reason="timm's own sequencer2d_s cfg has pool_size=None; timm's filters "
                                              "leave it out of this test"))
    if model_name in ("sm_sequencer2d_m", "sm_sequencer2d_l"):
        marks.append(pytest.mark.slow)
    selected = "timm-selected" if timm_selects(test, model_name) else "not-timm-selected"
    return pytest.param(test, model_name, marks=marks, id=f"{test}-{model_name}-{selected}")


@pytest.fixture
def timm_settings(monkeypatch):
    """timm's TorchScript executor settings (as its module sets them) and the small target sizes."""
    for name in TARGETS:
        monkeypatch.setattr(UP, name, SMALL_SIDE)
    executor = torch._C._jit_set_profiling_executor(True)
    mode = torch._C._jit_set_profiling_mode(False)
    yield
    torch._C._jit_set_profiling_executor(executor)
    torch._C._jit_set_profiling_mode(mode)


@pytest.mark.parametrize(("test", "model_name"), [_case(t, m) for m in [CONTROL, *OURS] for t in TESTS])
def test_timm_model_test(test: str, model_name: str, timm_settings) -> None:
    fn = getattr(UP, test)
    kwargs = dict(model_name=model_name, batch_size=TESTS[test])
    if "cfg_device" in inspect.signature(fn).parameters:
        kwargs["cfg_device"] = UP.torch_device  # timm's fixture without device contexts (see the module's doc)
    torch.manual_seed(0)
    fn(**kwargs)


def test_every_registered_preset_and_the_control_are_covered() -> None:
    assert set(OURS) == {p.timm_name for p in PRESETS.values()}
    assert CONTROL in timm.list_models("sequencer2d_s")
    assert type(timm.create_model(CONTROL, pretrained=False)).__module__ == "timm.models.sequencer"
    assert all(hasattr(UP, t) for t in TESTS)
