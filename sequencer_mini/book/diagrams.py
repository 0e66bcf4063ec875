"""Diagrams drawn by code: the Sequencer2D architecture and the LSTM cell (whole, or built up in four steps).

Both functions return a matplotlib ``Figure`` drawn with boxes and arrows, on the book's white
background (the book shows every figure inverted in its dark theme). The architecture figure reads
the numbers it prints (blocks, patch sizes, channels, hidden sizes) from a
:class:`~sequencer_mini.models.sequencer2d.Sequencer2DConfig`, so it draws any configuration correctly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sequencer_mini.models.sequencer2d import Sequencer2DConfig

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LSTM_STAGES", "lstm_cell_figure", "sequencer2d_figure"]

# Colours: one per kind of operation, the same in both figures.
_MIX = "#f4b183"  # token mixing (BiLSTM2D, LSTM gates)
_CHAN = "#9dc3e6"  # per-token layers (linear, MLP, norm)
_SHAPE = "#c5e0b4"  # stem, downsampling, pooling: the token grid changes
_GREY = "#e7e6e6"
_EDGE = "#404040"


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: float = 8.5,
         bold: bool = False) -> tuple[float, float, float, float]:
    """A rounded box centred at (x, y); returns its (left, right, bottom, top)."""
    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor=_EDGE, lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight="bold" if bold else "normal")
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "",
           style: str = "-|>", rad: float = 0.0, fontsize: float = 8) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle=style, color=_EDGE, lw=1.1, shrinkA=0, shrinkB=0,
                                connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center", va="bottom",
                fontsize=fontsize, color="#202020")


def sequencer2d_figure(config: Sequencer2DConfig | None = None, img_size: int = 224) -> Figure:
    """The whole model in three rows: stem → stages → head; one block; one BiLSTM2D layer.

    Args:
        config: the configuration to draw; default Sequencer2D-S.
        img_size: input side in pixels, used to print each stage's token grid.
    """
    # import cost: matplotlib loads only when a figure is drawn
    import matplotlib.pyplot as plt

    cfg = config or Sequencer2DConfig()
    fig, ax = plt.subplots(figsize=(8.6, 6.0), dpi=80)
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 13)
    ax.axis("off")
    _draw_model_row(ax, cfg, img_size)
    _draw_block_row(ax)
    _draw_bilstm2d_row(ax, cfg)
    ax.text(10.0, 0.35, "orange: mixes tokens · blue: one token at a time · green: makes the token grid",
            ha="center", fontsize=8, color="#404040")
    fig.tight_layout()
    return fig


def _draw_model_row(ax: Axes, cfg: Sequencer2DConfig, img_size: int) -> None:
    """Row 1: the model, left to right; green boxes change the token grid."""
    ax.text(0.2, 12.6, "Sequencer2D: image → stem → stages of blocks → head", fontsize=10, weight="bold")
    y = 11.2
    items: list[tuple[str, str, float]] = [(f"image\n3 × {img_size}\n× {img_size}", _GREY, 1.4)]
    side = img_size
    stages = zip(cfg.layers, cfg.patch_sizes, cfg.embed_dims, cfg.hidden_sizes, strict=True)
    for i, (blocks, p, dim, hid) in enumerate(stages):
        side //= p
        if i == 0:
            items.append((f"stem\n{p}×{p} conv\nstride {p}", _SHAPE, 1.5))
        elif p > 1:
            items.append((f"down-\nsample\n{p}×{p}", _SHAPE, 1.2))
        # stages numbered from 0, as the modules (stages.0 ...), sm.summary and the prose number them
        items.append((f"stage {i}\n{blocks} × block\n{side}×{side}\nC={dim}, D={hid}", _MIX, 2.1))
    items.append((f"head\nLayerNorm,\nmean pool,\nlinear\n→ {cfg.num_classes}", _CHAN, 1.9))
    gap = (19.8 - 0.2 - sum(w for _, _, w in items)) / (len(items) - 1)
    x, prev = 0.2, None
    for text, color, w in items:
        left, right, _, _ = _box(ax, x + w / 2, y, w, 2.2, text, color, fontsize=8)
        if prev is not None:
            _arrow(ax, (prev, y), (left, y))
        prev, x = right, x + w + gap


def _draw_block_row(ax: Axes) -> None:
    """Row 2: one block, its two residual branches drawn above the boxes."""
    ax.text(0.2, 8.7, "one Sequencer2D block (pre-norm, two residual branches, as in a Transformer block)",
            fontsize=10, weight="bold")
    y = 7.0
    _box(ax, 1.2, y, 1.6, 0.9, "X\nH × W × C", _GREY, fontsize=8)
    xs = [3.4, 5.9, 8.6, 11.2, 13.7, 16.3]
    labels = ["LayerNorm", "BiLSTM2D", "+", "LayerNorm", "MLP\nC → 3C → C", "+"]
    colors = [_CHAN, _MIX, "white", _CHAN, _CHAN, "white"]
    prev = 2.0
    for x, label, color in zip(xs, labels, colors, strict=True):
        w = 0.7 if label == "+" else 2.0
        left, right, _, _ = _box(ax, x, y, w, 0.9, label, color, fontsize=9 if label != "+" else 12)
        _arrow(ax, (prev, y), (left, y))
        prev = right
    _arrow(ax, (prev, y), (18.6, y))
    ax.text(19.0, y, "out", va="center", fontsize=8.5)
    for start, end in ((2.25, xs[2]), (xs[2] + 0.5, xs[5])):  # residual connections, above the boxes
        ax.plot([start, start, end], [y, y + 0.85, y + 0.85], color="#7f7f7f", lw=1.0, ls="--")
        _arrow(ax, (end, y + 0.85), (end, y + 0.45))
        ax.text((start + end) / 2, y + 0.92, "residual: add the input", ha="center", va="bottom", fontsize=8,
                color="#595959")


def _draw_bilstm2d_row(ax: Axes, cfg: Sequencer2DConfig) -> None:
    """Row 3: the BiLSTM2D layer, vertical and horizontal BiLSTMs, concatenated, then the FC."""
    ax.text(0.2, 5.3, "the BiLSTM2D layer: the only place where tokens exchange information", fontsize=10,
            weight="bold")
    hid = cfg.hidden_sizes[0]
    _box(ax, 1.1, 2.9, 1.8, 0.9, "X\nH × W × C", _GREY, fontsize=8)
    _box(ax, 4.9, 4.1, 4.6, 1.2, "vertical BiLSTM\nevery column, top↓ and bottom↑\n(B·W sequences of length H)",
         _MIX, fontsize=8)
    _box(ax, 4.9, 1.7, 4.6, 1.2, "horizontal BiLSTM\nevery row, left→ and right←\n(B·H sequences of length W)",
         _MIX, fontsize=8)
    _arrow(ax, (2.0, 3.1), (2.6, 3.8))
    _arrow(ax, (2.0, 2.7), (2.6, 2.0))
    _box(ax, 11.3, 2.9, 3.8, 1.6, f"concatenate\nH × W × 4D\n(D: LSTM hidden size;\nstage 0: 4 × {hid} = {4 * hid})",
         _GREY, fontsize=8)
    _arrow(ax, (7.2, 4.0), (9.4, 3.3))
    _arrow(ax, (7.2, 1.8), (9.4, 2.5))
    ax.text(8.4, 4.05, "H × W × 2D", ha="center", va="bottom", fontsize=8, color="#202020")
    ax.text(8.4, 1.75, "H × W × 2D", ha="center", va="top", fontsize=8, color="#202020")
    _box(ax, 15.0, 2.9, 2.0, 1.0, "FC (linear)\n4D → C", _CHAN, fontsize=8.5)
    _arrow(ax, (13.2, 2.9), (14.0, 2.9))
    _box(ax, 18.5, 2.9, 2.4, 0.9, "H × W × C\n(same shape)", _GREY, fontsize=8)
    _arrow(ax, (16.0, 2.9), (17.3, 2.9))


#: The four build-up stages of :func:`lstm_cell_figure`, in order, each with the equation it adds.
LSTM_STAGES: dict[int, tuple[str, str]] = {
    1: ("the gates", r"$\mathbf{f}_t, \mathbf{i}_t, \mathbf{o}_t = \sigma(W_{i\ast}\mathbf{x}_t + W_{h\ast}"
        r"\mathbf{h}_{t-1} + \mathbf{b}_\ast) \in (0, 1)$"),
    2: ("the candidate", r"$\mathbf{g}_t = \tanh(W_{ig}\mathbf{x}_t + W_{hg}\mathbf{h}_{t-1} + \mathbf{b}_g)"
        r" \in (-1, 1)$"),
    3: ("the memory cell", r"$\mathbf{c}_t = \mathbf{f}_t \odot \mathbf{c}_{t-1} + \mathbf{i}_t \odot "
        r"\mathbf{g}_t$"),
    4: ("the hidden state", r"$\mathbf{c}_t = \mathbf{f}_t \odot \mathbf{c}_{t-1} + \mathbf{i}_t \odot "
        r"\mathbf{g}_t\qquad \mathbf{h}_t = \mathbf{o}_t \odot \tanh(\mathbf{c}_t)$"),
}
_NEW = "#c0392b"  # what a build-up stage adds


def lstm_cell_figure(stage: int = 4) -> Figure:
    """One LSTM step: the cell line c_{t-1} → c_t on top, the four gates below, h_t out.

    Gate names and order follow ``torch.nn.LSTM``: input i, forget f, candidate g, output o.

    Args:
        stage: build the cell up in four figures (:data:`LSTM_STAGES`): 1 the three sigmoid gates, 2 the
            candidate, 3 the memory cell, 4 the hidden state (the whole cell, the default). What a stage adds
            is drawn in red.
    """
    # import cost: matplotlib loads only when a figure is drawn
    import matplotlib.pyplot as plt
    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib.patches import Circle, FancyBboxPatch

    if stage not in LSTM_STAGES:
        raise ValueError(f"stage must be one of {sorted(LSTM_STAGES)}, got {stage!r}")
    fig, ax = plt.subplots(figsize=(8.4, 4.4), dpi=80)
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 8.4)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((2.2, 0.9), 10.8, 6.4, boxstyle="round,pad=0.05,rounding_size=0.4",
                                facecolor="#fbfbfb", edgecolor="#7f7f7f", lw=1.0))

    def colour(at: int) -> str:
        return _NEW if at == stage and stage < 4 else _EDGE

    def op(x: float, y: float, text: str, at: int) -> None:
        ax.add_patch(Circle((x, y), 0.36, facecolor="white", edgecolor=colour(at), lw=1.1, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=4, color=colour(at))

    def line(points: list[tuple[float, float]], at: int, arrow: bool = True) -> None:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs[:-1] if arrow else xs, ys[:-1] if arrow else ys, color=colour(at), lw=1.2, zorder=1)
        if arrow:
            ax.annotate("", xy=points[-1], xytext=points[-2],
                        arrowprops=dict(arrowstyle="-|>", color=colour(at), lw=1.1, shrinkA=0, shrinkB=0))

    top, bottom = 6.3, 1.6
    # inputs (every stage)
    ax.text(0.1, bottom, r"$\mathbf{h}_{t-1}$", fontsize=12, va="center")
    ax.text(2.5, 0.15, r"$\mathbf{x}_t$", fontsize=12, ha="center")
    line([(1.0, bottom), (10.6, bottom)], 1, arrow=False)
    line([(2.5, 0.45), (2.5, bottom)], 1, arrow=False)
    # gates: f, i, o at stage 1, the candidate g at stage 2
    gates = [(4.4, "f", r"$\sigma$", "forget", 1), (6.3, "i", r"$\sigma$", "input", 1),
             (7.6, "g", "tanh", "candidate", 2), (10.6, "o", r"$\sigma$", "output", 1)]
    for x, name, fn, word, at in gates:
        if at > stage:
            continue
        _box(ax, x, 3.3, 1.05, 0.75, fn, _MIX, fontsize=10)
        ax.text(x, 2.05 if name == "g" else 2.45, f"{name}: {word}", ha="center", va="center", fontsize=8.5,
                zorder=3, color=colour(at),
                bbox=dict(facecolor="#fbfbfb", edgecolor="none", pad=1.0))
        line([(x, bottom), (x, 2.92)], at, arrow=False)
        ax.plot([x], [bottom], "o", color=_EDGE, ms=3)
    if stage >= 3:  # the memory cell: c_{t-1} × f + i × g -> c_t
        ax.text(0.1, top, r"$\mathbf{c}_{t-1}$", fontsize=12, va="center", color=colour(3))
        line([(1.0, top), (4.04, top)], 3)
        op(4.4, top, "×", 3)
        line([(4.76, top), (7.84, top)], 3)
        op(8.2, top, "+", 3)
        line([(8.56, top), (15.0, top)], 3)
        ax.text(15.1, top, r"$\mathbf{c}_t$", fontsize=12, va="center", color=colour(3))
        line([(4.4, 3.68), (4.4, top - 0.36)], 3)
        op(6.95, 4.8, "×", 3)
        line([(6.3, 3.68), (6.3, 4.8), (6.59, 4.8)], 3)
        line([(7.6, 3.68), (7.6, 4.8), (7.31, 4.8)], 3)
        line([(6.95, 5.16), (6.95, 5.6), (8.2, 5.6), (8.2, top - 0.36)], 3)
    if stage >= 4:  # the hidden state: tanh(c_t) × o -> h_t
        _box(ax, 12.0, 5.2, 1.0, 0.6, "tanh", _CHAN, fontsize=9)
        line([(12.0, top), (12.0, 5.5)], 4)
        op(12.0, 3.3, "×", 4)
        line([(12.0, 4.9), (12.0, 3.66)], 4)
        line([(10.6, 3.68), (10.6, 4.2), (11.3, 4.2), (11.72, 3.55)], 4)
        line([(12.36, 3.3), (13.6, 3.3), (13.6, bottom), (15.0, bottom)], 4)
        ax.text(15.1, bottom, r"$\mathbf{h}_t$", fontsize=12, va="center")
        line([(13.6, bottom), (13.6, 0.45), (14.4, 0.45)], 4)
        ax.text(14.5, 0.45, "output\nat step t", fontsize=8, va="center")
    title, equation = LSTM_STAGES[stage]
    if stage < 4:
        ax.text(0.1, 8.1, f"step {stage} of 4: {title}", fontsize=10, weight="bold", color=_NEW, va="center")
    ax.text(8.0, 7.6, equation, ha="center", fontsize=11)
    ax.text(8.0, 0.15, r"each gate reads $[\mathbf{x}_t, \mathbf{h}_{t-1}]$ through its own weights",
            ha="center", fontsize=8.5, color="#404040")
    fig.tight_layout()
    return fig
