"""CUDA-only correctness checks, run on a GPU machine (prints one line per check, exits non-zero on failure).

* BiLSTM2D with the cuDNN backend equals the from-scratch backend on the GPU;
* Sequencer2D-S gives the same logits on the GPU as on the CPU;
* the ERF works on cuDNN LSTMs in eval mode (they are switched to train mode for the backward pass) and every
  module's mode is restored afterwards; one BiLSTM2D layer's ERF is an exact cross on the GPU too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sequencer_mini as sm  # noqa: E402
from sequencer_mini.analysis.erf import effective_receptive_field  # noqa: E402


def main() -> int:
    assert torch.cuda.is_available(), "needs a CUDA device"
    dev = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    failures = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")

    torch.manual_seed(0)
    a = sm.BiLSTM2D(64, 16, backend="torch").to(dev)
    b = sm.BiLSTM2D(64, 16, backend="scratch").to(dev)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 14, 10, 64, device=dev)
    diff = (a(x) - b(x)).abs().max().item()
    check("BiLSTM2D cuDNN == scratch on GPU", diff < 1e-4, f"max|diff|={diff:.2e}")

    model = sm.sequencer2d_s().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        img = torch.randn(2, 3, 224, 224, generator=gen)
        cpu = model(img)
        gpu = model.to(dev)(img.to(dev)).cpu()
    diff = (cpu - gpu).abs().max().item()
    check("Sequencer2D-S logits GPU == CPU", diff < 1e-3 * max(1.0, cpu.abs().max().item()), f"max|diff|={diff:.2e}")

    one = sm.Sequencer2D(layers=(1,), patch_sizes=(1,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(1.0,),
                         in_chans=1, num_classes=2).to(dev).eval()
    modes_before = {n: m.training for n, m in one.named_modules()}
    erf = effective_receptive_field(one, torch.randn(32, 1, 9, 9, device=dev), "stages.0.blocks.0", centre="exact",
                                    return_raw=True)
    raw = erf.raw
    cross = torch.zeros(9, 9, dtype=torch.bool)
    cross[erf.centre[0], :] = True
    cross[:, erf.centre[1]] = True
    # Off the cross the gradient is exactly zero; on it, ReLU keeps only positive gradients, so a few cross
    # positions may be zero for a handful of images: require most of the cross to be positive.
    ok = bool((raw[~cross] == 0).all()) and (raw[cross] > 0).float().mean().item() > 0.5
    check("ERF on cuDNN (eval model) is an exact cross", ok,
          f"off-cross max={raw[~cross].max().item():.2e}, "
          f"positive on cross={(raw[cross] > 0).float().mean().item():.2f}")
    check("modes restored after ERF", modes_before == {n: m.training for n, m in one.named_modules()})
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
