"""The 2D -> 3D network of Henzler et al. (2018), after §4.1 of the paper (docs/model.md).

An x-ray opacity image ``(B, 1, S, S)`` goes in; the view-aligned volume comes out with depth as
channels, ``(B, D, S/2, S/2)`` (docs/geometry.md: ``view[k, r, c]``, k = depth slice). Layout::

    7x7 conv, stride 2 -> stem_channels, BN, ReLU                      (S/2)^2
    bottleneck residual blocks ramping the channels up to `width`      (channels double per block)
    `pre_blocks` residual blocks at `width`                            ("steps before", grey blocks)
    one hourglass of `hourglass_levels` levels                          (min resolution S/2 / 2^L)
        per level: skip = res(x);  down = res(maxpool2(x)) -> inner -> res;
                   out = skip + ReLU(BN(ConvTranspose 4x4 s2 (down)))       (add, not concatenate)
        at the bottom: res
    `post_blocks` residual blocks at `width`
    1x1 conv -> width, BN, ReLU                                        ("step after", pink block)
    1x1 conv -> out_depth (with bias), no activation

A residual block is three basic blocks (conv, BN, ReLU) — 1x1 to ``out/2``, 3x3 at ``out/2``, 1x1 to
``out`` — plus an identity skip, or a 1x1 conv + BN projection where the channel counts differ (paper
§4.1: "3-residual block ... combines 3 basic blocks with a residual link"). Every count in a
residual stage is multiplied by ``blocks_per_level``.

``NetworkConfig.paper()`` has 8.23 M parameters. It is not the authors' released network, which has
4.15 M: fixed bilinear upsampling, identity skips, 3 blocks per pooling, another channel ramp, ReLU
after the residual addition, no output bias; :meth:`NetworkConfig.release` builds that one
(docs/model.md, "Network").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .names import NETWORK_PRESETS

__all__ = [
    "PRESETS",
    "NetworkConfig",
    "TomographyNet",
    "ResidualBlock",
    "count_parameters",
    "flops_per_sample",
    "describe",
    "model_info_text",
]


#: the presets' names (:meth:`NetworkConfig.preset`; defined in model.names)
PRESETS = NETWORK_PRESETS
#: standard deviation of the output layer's initial weights (its bias starts at 0)
OUTPUT_INIT_STD = 1e-3
# the order of the network's weights and activations in memory; the same values either way
MEMORY_FORMATS = {"nhwc": torch.channels_last, "nchw": torch.contiguous_format}

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of a :class:`TomographyNet`.

    input_size: side S of the square input x-ray (the paper: 256).
    out_size: side of the output view volume; must be ``input_size // 2`` (stride-2 stem).
    out_depth: depth slices D = output channels (the paper: 128).
    width: channels of the residual trunk and hourglass (the paper: 256).
    stem_channels: channels of the 7x7 stride-2 stem convolution (the paper: 64).
    hourglass_levels: pooling levels L; min resolution = out_size / 2**L (the paper: 128/16 = 8).
    blocks_per_level: residual blocks per hourglass stage (1 as in Newell et al.).
    pre_blocks: residual blocks at ``width`` between the channel ramp and the hourglass.
    post_blocks: residual blocks at ``width`` after the hourglass.
    in_channels: input image channels (1: opacity).
    upsample: ``"learned"`` (a 4x4 stride-2 transposed convolution, then BN and ReLU) or ``"bilinear"``
        (the release's: the same deconvolution per channel with fixed bilinear weights, no BN or ReLU).
    skip_blocks: residual blocks on each hourglass skip (0: the identity, as the release).
    down_blocks: residual blocks after each pooling (the release: 3).
    ramp_blocks: 0: the channel ramp doubles per block from ``stem_channels`` to ``width``; n >= 2: n
        blocks, the first doubling, the last reaching ``width`` (the release: 4, 64-128-128-128-256).
    residual_relu: ``"branch"`` (ReLU on the third convolution, none after the addition: the paper's
        text) or ``"after_add"`` (BN only on the third, ReLU after the addition: the release).
    out_bias: whether the output convolution has a bias (the release: no).
    The last six default to this project's reading of the paper (:meth:`paper`); :meth:`release` is the
    authors' released ``deploy.prototxt`` (docs/model.md, "Network").
    """

    input_size: int = 256
    out_depth: int = 128
    out_size: int = 128
    width: int = 256
    stem_channels: int = 64
    hourglass_levels: int = 4
    blocks_per_level: int = 1
    pre_blocks: int = 4
    post_blocks: int = 0
    in_channels: int = 1
    upsample: str = "learned"
    skip_blocks: int = 1
    down_blocks: int = 1
    ramp_blocks: int = 0
    residual_relu: str = "branch"
    out_bias: bool = True

    # -- presets -----------------------------------------------------------------------------------

    @classmethod
    def paper(cls) -> NetworkConfig:
        """The authors' full size: 256² in, 128 x 128² out, width 256, min resolution 8."""
        return cls()

    @classmethod
    def release(cls) -> NetworkConfig:
        """The authors' released network (``deploy.prototxt``, henzler/single-image-tomography): the
        paper's sizes with fixed bilinear upsampling, identity skips, 3 residual blocks per pooling, a
        64-128-128-128-256 ramp, ReLU after the residual addition, no output bias; 4,153,280
        parameters (16,384 of them the frozen bilinear weights), 25.6 GFLOP per sample."""
        return cls(
            pre_blocks=0,
            upsample="bilinear",
            skip_blocks=0,
            down_blocks=3,
            ramp_blocks=4,
            residual_relu="after_add",
            out_bias=False,
        )

    @classmethod
    def demo(cls) -> NetworkConfig:
        """Reduced for a 2-core CPU: 64² in, 32 x 32² out, width 64, 3 levels (min resolution 4)."""
        return cls(
            input_size=64,
            out_depth=32,
            out_size=32,
            width=64,
            stem_channels=16,
            hourglass_levels=3,
            blocks_per_level=1,
            pre_blocks=1,
            post_blocks=0,
        )

    @classmethod
    def medium(cls) -> NetworkConfig:
        """For a 64³ output on a 2-core CPU (the mice run): 128² in, 64 x 64² out, width 48, 3 levels
        (min resolution 8, as the paper's), 0.21 M parameters."""
        return cls(
            input_size=128,
            out_depth=64,
            out_size=64,
            width=48,
            stem_channels=16,
            hourglass_levels=3,
            blocks_per_level=1,
            pre_blocks=1,
            post_blocks=0,
        )

    @classmethod
    def preset(cls, name: str) -> NetworkConfig:
        """One of :data:`PRESETS` (each the classmethod of that name)."""
        if name not in PRESETS:
            raise ValueError(f"unknown network preset {name!r}; choose one of {sorted(PRESETS)}")
        return getattr(cls, name)()

    # -- derived -----------------------------------------------------------------------------------

    @property
    def min_resolution(self) -> int:
        """Spatial side at the bottom of the hourglass: ``out_size // 2**hourglass_levels``."""
        return self.out_size // (2**self.hourglass_levels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample input shape (C, H, W)."""
        return (self.in_channels, self.input_size, self.input_size)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-sample output shape (D, H/2, W/2): the view volume, depth as channels."""
        return (self.out_depth, self.out_size, self.out_size)

    def ramp_channels(self) -> list[int]:
        """Channel counts after each ramp block: doubling from ``stem_channels`` up to ``width``, or
        (``ramp_blocks`` = n >= 2) the first doubling, the middle ones keeping, the last at ``width``."""
        if self.ramp_blocks:
            first = min(2 * self.stem_channels, self.width)
            return [first] * (self.ramp_blocks - 1) + [self.width]
        chans, c = [], self.stem_channels
        while c != self.width:
            c = min(2 * c, self.width) if c < self.width else self.width
            chans.append(c)
        return chans

    # -- checks and (de)serialisation --------------------------------------------------------------

    def validate(self) -> NetworkConfig:
        """Raise ValueError for non-positive or inconsistent sizes; return self."""
        for f in dataclasses.fields(self):
            v, kind = getattr(self, f.name), type(f.default)
            if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"NetworkConfig.{f.name} must be an int, got {v!r}")
            if kind is not int and not isinstance(v, kind):
                raise ValueError(f"NetworkConfig.{f.name} must be a {kind.__name__}, got {v!r}")
        for name, allowed in (("upsample", ("learned", "bilinear")), ("residual_relu", ("branch", "after_add"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"NetworkConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.ramp_blocks == 1 or self.ramp_blocks < 0:
            raise ValueError(f"NetworkConfig.ramp_blocks must be 0 (doubling) or >= 2, got {self.ramp_blocks}")
        for name in (
            "input_size",
            "out_depth",
            "out_size",
            "width",
            "stem_channels",
            "hourglass_levels",
            "blocks_per_level",
            "in_channels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"NetworkConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pre_blocks", "post_blocks", "skip_blocks", "down_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"NetworkConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.width < 2:
            raise ValueError(f"NetworkConfig.width must be >= 2 (bottleneck uses width/2), got {self.width}")
        if self.input_size % 2:
            raise ValueError(f"input_size must be even (stride-2 stem), got {self.input_size}")
        if self.out_size != self.input_size // 2:
            raise ValueError(
                f"out_size must be input_size // 2 = {self.input_size // 2} (stride-2 stem), got {self.out_size}"
            )
        step = 2**self.hourglass_levels
        if self.out_size % step:
            raise ValueError(
                f"out_size {self.out_size} (= input_size/2) is not divisible by "
                f"2**hourglass_levels = {step}: the hourglass would not reach an integer minimal "
                f"resolution; use input_size divisible by {2 * step}"
            )
        if self.min_resolution < 1:  # pragma: no cover - implied by divisibility
            raise ValueError(f"minimal resolution {self.min_resolution} < 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError, missing keys take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown NetworkConfig keys {unknown}; known: {sorted(names)}")
        return cls(**dict(d)).validate()


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------


def _basic(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Basic block: conv (no bias) + BN + ReLU (without ``relu``: no ReLU).
    (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Bottleneck residual block: 1x1 -> 3x3 -> 1x1 basic blocks (mid = cout/2) + skip.

    (B, cin, H, W) -> (B, cout, H, W). The skip is the identity, or 1x1 conv + BN where cin != cout.
    ``relu_after_add``: the third convolution ends at its BN and the sum goes through a ReLU (the
    release); otherwise the third has its ReLU and the sum none (the paper's "3 basic blocks").
    """

    def __init__(self, cin: int, cout: int, relu_after_add: bool = False):
        super().__init__()
        mid = max(1, cout // 2)
        self.body = nn.Sequential(
            _basic(cin, mid, 1), _basic(mid, mid, 3), _basic(mid, cout, 1, relu=not relu_after_add)
        )
        self.skip = (
            nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu_after_add = relu_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + self.skip(x)
        return torch.relu(y) if self.relu_after_add else y


def _res_stack(c: int, n: int, relu_after_add: bool = False) -> nn.Sequential:
    """n residual blocks at c channels (identity when n == 0)."""
    return nn.Sequential(*[ResidualBlock(c, c, relu_after_add) for _ in range(n)])


class BilinearUp(nn.ConvTranspose2d):
    """2x bilinear up-sampling as the release does it: a 4x4 stride-2 transposed convolution per
    channel (groups = channels) with Caffe's fixed bilinear weights, no bias, not trained.
    (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, c: int):
        super().__init__(c, c, 4, stride=2, padding=1, groups=c, bias=False)
        self.weight.requires_grad_(False)
        self.reset_bilinear()

    def reset_bilinear(self) -> None:
        """Caffe's bilinear filler for kernel 4: the outer product of (1, 3, 3, 1)/4 with itself."""
        if self.weight.is_meta:
            return
        w = torch.tensor([0.25, 0.75, 0.75, 0.25])
        with torch.no_grad():
            self.weight.copy_(torch.outer(w, w).expand_as(self.weight))


class Hourglass(nn.Module):
    """One hourglass level (recursive). (B, C, H, W) -> (B, C, H, W), H divisible by 2**levels.

    skip = res^skip(x); low = res^down(maxpool(x)) -> inner (or res at the bottom) -> res;
    return skip + up(low), up = ReLU(BN(deconv4x4/2)) (``"learned"``) or :class:`BilinearUp`
    (``"bilinear"``). ``n`` multiplies every count (``blocks_per_level``).
    """

    def __init__(self, levels: int, c: int, n: int, cfg: NetworkConfig | None = None):
        super().__init__()
        cfg = cfg or NetworkConfig()
        after_add = cfg.residual_relu == "after_add"
        self.skip = _res_stack(c, n * cfg.skip_blocks, after_add)
        self.pool = nn.MaxPool2d(2, 2)
        self.down = _res_stack(c, n * cfg.down_blocks, after_add)
        self.inner = Hourglass(levels - 1, c, n, cfg) if levels > 1 else _res_stack(c, n, after_add)
        self.after = _res_stack(c, n, after_add)
        self.up: nn.Module = (
            BilinearUp(c)
            if cfg.upsample == "bilinear"
            else nn.Sequential(
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.down(self.pool(x))))
        return self.skip(x) + self.up(low)


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------


class TomographyNet(nn.Module):
    """X-ray opacity (B, 1, S, S) -> view volume (B, D, S/2, S/2), depth as channels (docs/geometry.md,
    docs/model.md)."""

    def __init__(self, config: NetworkConfig | None = None):
        super().__init__()
        cfg = (config or NetworkConfig.paper()).validate()
        self.config = cfg
        self.stem = _basic(cfg.in_channels, cfg.stem_channels, 7, stride=2)
        after_add = cfg.residual_relu == "after_add"
        ramp, c = [], cfg.stem_channels
        for nxt in cfg.ramp_channels():
            ramp.append(ResidualBlock(c, nxt, after_add))
            c = nxt
        self.ramp = nn.Sequential(*ramp)
        self.pre = _res_stack(cfg.width, cfg.pre_blocks, after_add)
        self.hourglass = Hourglass(cfg.hourglass_levels, cfg.width, cfg.blocks_per_level, cfg)
        self.post = _res_stack(cfg.width, cfg.post_blocks, after_add)
        self.head = _basic(cfg.width, cfg.width, 1)
        self.out = nn.Conv2d(cfg.width, cfg.out_depth, 1, bias=cfg.out_bias)
        self._init_weights()
        # channels-last (NHWC) weights and activations: on 2 CPU cores a training step takes 0.75-0.9x
        # the time of NCHW (demo, medium), about half for the paper network (docs/benchmarks.md, tomo bench train)
        self.set_memory_format("nhwc")

    def set_memory_format(self, name: str) -> TomographyNet:
        """Keep the weights and activations in ``name`` order (a key of :data:`MEMORY_FORMATS`):
        ``"nhwc"`` (``torch.channels_last``, every network's from construction) or ``"nchw"`` (for
        comparisons). The values, the state dict and the output's (B, D, H, W) order do not change.
        Returns self."""
        if name not in MEMORY_FORMATS:
            raise ValueError(f"memory format must be one of {sorted(MEMORY_FORMATS)}, got {name!r}")
        self.memory_format = name
        return self.to(memory_format=MEMORY_FORMATS[name])  # type: ignore[call-overload]  # the stubs lack it

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, BilinearUp):
                m.reset_bilinear()  # fixed, not learned
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # The linear output layer starts near zero (weights N(0, OUTPUT_INIT_STD²), bias 0): the first
        # prediction is an almost empty volume, the best constant guess for mostly empty targets.
        # With fan-in scaling it was of order ±1 per voxel (initial MSE ~0.4 against targets of
        # variance ~0.003) and the first hundreds of steps went into undoing it (docs/model.md).
        nn.init.normal_(self.out.weight, std=OUTPUT_INIT_STD)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a finite float tensor of shape (B, C, S, S)."""
        cfg = self.config
        want = f"(B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size})"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape {want}, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2:] != (cfg.input_size, cfg.input_size):
            raise ValueError(f"expected input of shape {want} (x-ray opacity), got {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError(f"expected input of shape {want} with B >= 1, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point input {want}, got dtype {x.dtype}")
        # the value check reads the tensor back (a device sync); torch.compile would break its graph
        # here, so a compiled network leaves it to its caller
        if not x.is_meta and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or infinite values")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) opacity -> (B, out_depth, S/2, S/2) predicted densities (no activation)."""
        self.check_input(x)
        x = self.ramp(self.stem(x.contiguous(memory_format=MEMORY_FORMATS[self.memory_format])))
        x = self.post(self.hourglass(self.pre(x)))
        return self.out(self.head(x)).contiguous()  # NCHW out: (B, D, H, W) as callers index it


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works for models on the 'meta' device). BN running stats not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _meta_model(config: NetworkConfig) -> TomographyNet:
    with torch.device("meta"):
        return TomographyNet(config)


def flops_per_sample(config: NetworkConfig) -> int:
    """Forward FLOPs of one sample, counted as 2 x multiply-accumulates of the conv/deconv layers.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` on a 'meta' forward of batch 1
    (no memory, no compute). BN, ReLU, additions and pooling are not counted (< 1 %).
    """
    model = _meta_model(config.validate()).eval()
    x = torch.empty((1, *config.input_shape), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def describe(config: NetworkConfig) -> dict[str, Any]:
    """Parameters, FLOPs (2 x MACs, forward, per sample), shapes and minimal resolution."""
    config = config.validate()
    flops = flops_per_sample(config)
    return {
        "params": count_parameters(_meta_model(config)),
        "flops_per_sample": flops,
        "macs_per_sample": flops // 2,
        "input_shape": list(config.input_shape),
        "output_shape": list(config.output_shape),
        "min_resolution": config.min_resolution,
        "config": config.to_dict(),
    }


def model_info_text(config: NetworkConfig, name: str | None = None) -> str:
    """Human-readable summary for ``tomo model-info``."""
    d = describe(config)
    c = config
    lines = [
        f"TomographyNet{f' ({name})' if name else ''}",
        f"  input    (B, {', '.join(map(str, d['input_shape']))})  x-ray opacity",
        f"  output   (B, {', '.join(map(str, d['output_shape']))})  view volume, depth as channels",
        f"  stem     7x7/2 conv -> {c.stem_channels}, ramp -> {c.ramp_channels()}, "
        f"{c.pre_blocks} residual blocks at {c.width}",
        f"  hourglass {c.hourglass_levels} levels x {c.blocks_per_level} block(s), "
        f"{c.out_size}^2 -> min resolution {d['min_resolution']}^2; up: "
        + ("fixed bilinear" if c.upsample == "bilinear" else "learned deconv + BN + ReLU")
        + f", skips: {c.skip_blocks or 'identity'}{' res' if c.skip_blocks else ''}, "
        f"{c.down_blocks} res per pooling, ReLU "
        + ("after the residual add" if c.residual_relu == "after_add" else "in the branch"),
        f"  head     {c.post_blocks} residual blocks, 1x1 -> {c.width}, 1x1 -> {c.out_depth}"
        + ("" if c.out_bias else " (no bias)"),
        f"  params   {d['params']:,} ({d['params'] / 1e6:.2f} M)",
        f"  FLOPs    {d['flops_per_sample']:,} per sample forward "
        f"({d['flops_per_sample'] / 1e9:.2f} GFLOP = 2 x {d['macs_per_sample'] / 1e9:.2f} GMAC)",
    ]
    return "\n".join(lines)
