"""The 2D -> 3D network (model/network.py): shapes, size of the paper preset, validation, learning."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from model.checkpoint import resume_differences
from model.network import (
    BilinearUp,
    Hourglass,
    NetworkConfig,
    ResidualBlock,
    TomographyNet,
    count_parameters,
    describe,
    flops_per_sample,
    model_info_text,
)

TINY = NetworkConfig(input_size=16, out_size=8, out_depth=4, width=8, stem_channels=4, hourglass_levels=2, pre_blocks=1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and robust to a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meta(config: NetworkConfig) -> TomographyNet:
    with torch.device("meta"):
        return TomographyNet(config)


@pytest.mark.parametrize("config, batch", [(TINY, 3), (NetworkConfig.demo(), 2)])
def test_output_shape(config, batch):
    torch.manual_seed(0)
    net = TomographyNet(config).eval()
    with torch.no_grad():
        out = net(torch.rand(batch, 1, config.input_size, config.input_size))
    assert out.shape == (batch, config.out_depth, config.out_size, config.out_size)
    assert out.shape[1:] == config.output_shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_release_preset_is_the_authors_deploy_prototxt():
    """NetworkConfig.release(): the released network's structure as counted from its deploy.prototxt
    (henzler/single-image-tomography): 4,153,280 parameters, 16,384 of them the frozen bilinear
    up-sampling weights (4 levels x 256 channels x 4 x 4), 25.6 GFLOP; no output bias."""
    cfg = NetworkConfig.release()
    assert cfg.input_shape == (1, 256, 256) and cfg.output_shape == (128, 128, 128)
    assert cfg.ramp_channels() == [128, 128, 128, 256]
    m = _meta(cfg)
    assert count_parameters(m) == 4_153_280
    assert count_parameters(m) - count_parameters(m, trainable_only=True) == 4 * 256 * 16
    assert m.out.bias is None and round(flops_per_sample(cfg) / 1e9, 1) == 25.6
    assert NetworkConfig.preset("release") == cfg and NetworkConfig.from_dict(cfg.to_dict()) == cfg


def test_release_options_bilinear_up_identity_skips_relu_after_add():
    up = BilinearUp(3)
    x = torch.rand(1, 3, 8, 8)
    want = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(up(x)[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-6)  # bilinear inside
    assert not up.weight.requires_grad
    small = NetworkConfig(
        input_size=32, out_size=16, out_depth=8, width=16, stem_channels=8, hourglass_levels=2, pre_blocks=0,
        upsample="bilinear", skip_blocks=0, down_blocks=3, ramp_blocks=4, residual_relu="after_add", out_bias=False,
    )  # fmt: skip
    net = TomographyNet(small)
    assert all(
        isinstance(h.skip, nn.Sequential) and len(h.skip) == 0 for h in net.modules() if isinstance(h, Hourglass)
    )
    assert all(len(h.down) == 3 for h in net.modules() if isinstance(h, Hourglass))
    block = next(b for b in net.modules() if isinstance(b, ResidualBlock))
    assert block.relu_after_add and not isinstance(block.body[2][-1], nn.ReLU)
    assert (block(torch.randn(2, block.body[0][0].in_channels, 8, 8)) >= 0).all()  # ReLU after the addition
    # a training step leaves the bilinear weights as they are
    ups = [b for b in net.modules() if isinstance(b, BilinearUp)]
    frozen = [b.weight.clone() for b in ups]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(torch.rand(2, 1, 32, 32)).square().mean().backward()
    opt.step()
    assert all(
        torch.equal(a, b.weight) for a, b in zip(frozen, (b for b in net.modules() if isinstance(b, BilinearUp)))
    )
    for bad, match in (
        (dict(upsample="nearest"), "upsample must be one of"),
        (dict(residual_relu="none"), "residual_relu must be one of"),
        (dict(ramp_blocks=1), "ramp_blocks must be 0"),
        (dict(out_bias=1), "out_bias must be a bool"),
        (dict(skip_blocks=-1), "skip_blocks must be >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            NetworkConfig(**{**TINY.to_dict(), **bad}).validate()


def test_checkpoints_made_before_the_release_options_load_and_resume_unchanged():
    """A network dict without the release options (every checkpoint before session 25) is the same
    network, and resuming it finds no difference."""
    old = {k: v for k, v in NetworkConfig.paper().to_dict().items() if k in {
        "input_size", "out_depth", "out_size", "width", "stem_channels", "hourglass_levels", "blocks_per_level",
        "pre_blocks", "post_blocks", "in_channels"}}  # fmt: skip
    assert NetworkConfig.from_dict(old) == NetworkConfig.paper()
    state = {"network": old, "train": {}, "data": {"content": "x"}}
    assert resume_differences(state, net=NetworkConfig.paper().to_dict(), train={}, data={"content": "x"}) == []
    assert resume_differences(state, net=NetworkConfig.release().to_dict(), train={}, data={"content": "x"})


def test_paper_preset_sizes_and_parameter_count():
    cfg = NetworkConfig.paper()
    assert cfg.input_shape == (1, 256, 256)
    assert cfg.output_shape == (128, 128, 128)
    assert (cfg.width, cfg.stem_channels, cfg.hourglass_levels) == (256, 64, 4)
    n = count_parameters(_meta(cfg))
    assert abs(n - 8.3e6) <= 0.10 * 8.3e6, n
    # the meta count equals a real CPU model's
    assert count_parameters(TomographyNet(cfg)) == n
    assert describe(cfg)["params"] == n


def test_paper_meta_forward_shape_and_min_resolution():
    cfg = NetworkConfig.paper()
    assert cfg.min_resolution == 8
    net = _meta(cfg).eval()
    seen = {}

    def bottom(h: Hourglass):
        while isinstance(h.inner, Hourglass):
            h = h.inner
        return h.inner

    def record(module, inp, out):
        seen["bottom"] = tuple(out.shape)

    bottom(net.hourglass).register_forward_hook(record)
    out = net(torch.empty(2, 1, 256, 256, device="meta"))
    assert tuple(out.shape) == (2, 128, 128, 128)
    assert seen["bottom"] == (2, 256, 8, 8)


def test_architecture_follows_design():
    net = TomographyNet(NetworkConfig.paper())
    stem = net.stem[0]
    assert isinstance(stem, nn.Conv2d) and stem.kernel_size == (7, 7) and stem.stride == (2, 2)
    assert stem.out_channels == 64 and stem.bias is None
    deconvs = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 4
    assert all(d.kernel_size == (4, 4) and d.stride == (2, 2) and d.padding == (1, 1) for d in deconvs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4
    assert (net.out.kernel_size, net.out.in_channels, net.out.out_channels) == ((1, 1), 256, 128)
    assert net.head[0].kernel_size == (1, 1) and net.head[0].out_channels == 256
    # every conv followed by BN has no bias
    for m in net.modules():
        if isinstance(m, nn.Sequential):
            layers = list(m)
            for a, b in zip(layers, layers[1:]):
                if isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(b, nn.BatchNorm2d):
                    assert a.bias is None


def test_residual_block_skip():
    same, proj = ResidualBlock(8, 8), ResidualBlock(4, 8)
    assert isinstance(same.skip, nn.Identity)
    assert isinstance(proj.skip[0], nn.Conv2d) and proj.skip[0].kernel_size == (1, 1)
    assert [m.kernel_size for m in proj.body.modules() if isinstance(m, nn.Conv2d)] == [(1, 1), (3, 3), (1, 1)]
    # three basic blocks, each conv -> BN -> ReLU (paper §4.1), bottleneck at out/2
    assert [[type(layer) for layer in basic] for basic in proj.body] == [[nn.Conv2d, nn.BatchNorm2d, nn.ReLU]] * 3
    assert [basic[0].out_channels for basic in proj.body] == [4, 4, 8]
    x = torch.randn(2, 4, 5, 5)
    assert proj(x).shape == (2, 8, 5, 5)
    # zeroing the body leaves exactly the skip: residual = body + skip
    for m in same.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)
    y = torch.randn(2, 8, 5, 5)
    assert torch.equal(same.eval()(y), y)


def test_hourglass_adds_skip_branch():
    torch.manual_seed(0)
    hg = Hourglass(2, 8, 1).eval()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        full = hg(x)
        up = hg.up(hg.after(hg.inner(hg.down(hg.pool(x)))))
        assert torch.allclose(full, hg.skip(x) + up, atol=1e-6)


def test_memory_format_orders_weights_and_activations():
    """Every network keeps its weights and activations in NHWC order; set_memory_format("nchw") keeps
    them in NCHW order with the same output, and an unknown name is refused."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    seen: list[torch.Tensor] = []
    model = TomographyNet(TINY).eval()
    model.stem.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        nhwc = model(x)
        nchw = model.set_memory_format("nchw")(x)
    assert model.memory_format == "nchw" and nhwc.is_contiguous() and nchw.is_contiguous()
    torch.testing.assert_close(nchw, nhwc, rtol=1e-5, atol=1e-6)
    cl = torch.channels_last
    assert seen[0].is_contiguous(memory_format=cl) and not seen[0].is_contiguous()
    assert seen[1].is_contiguous() and not seen[1].is_contiguous(memory_format=cl)
    weights = [  # those whose two orders differ: not 1 × 1 kernels or one input channel
        m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.in_channels > 1
    ]
    assert weights and all(w.is_contiguous() and not w.is_contiguous(memory_format=cl) for w in weights)
    model.set_memory_format("nhwc")
    assert all(w.is_contiguous(memory_format=cl) and not w.is_contiguous() for w in weights)
    with pytest.raises(ValueError, match="memory format must be one of"):
        model.set_memory_format("channels_last")


def test_forward_backward_gradients_finite():
    torch.manual_seed(0)
    net = TomographyNet(TINY).train()
    x = torch.rand(4, 1, 16, 16)
    loss = net(x).square().mean()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert net.stem[0].weight.grad.abs().sum() > 0  # the gradient reaches the first layer


@pytest.mark.parametrize(
    "shape", [(1, 16, 16), (2, 2, 16, 16), (2, 1, 16, 15), (2, 1, 32, 32), (2, 1, 16, 16, 1), (0, 1, 16, 16)]
)
def test_bad_input_shape_raises(shape):
    net = TomographyNet(TINY)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        net(torch.zeros(shape))


def test_bad_input_values_raise():
    net = TomographyNet(TINY)
    x = torch.rand(2, 1, 16, 16)
    x[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        net(x)
    with pytest.raises(ValueError, match="floating"):
        net(torch.zeros(2, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="Tensor"):
        net([[0.0]])


def test_config_round_trip():
    for cfg in (NetworkConfig.paper(), NetworkConfig.demo(), TINY):
        d = cfg.to_dict()
        assert NetworkConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert NetworkConfig.preset("demo") == NetworkConfig.demo()
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_dict({**TINY.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="preset"):
        NetworkConfig.preset("huge")
    # a checkpoint's config rebuilds a network with identical parameter shapes
    a, b = TomographyNet(TINY), TomographyNet(NetworkConfig.from_dict(TINY.to_dict()))
    b.load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    "changes",
    [
        dict(input_size=250, out_size=125),  # 125 not divisible by 2**4
        dict(out_size=64),  # not input_size // 2
        dict(input_size=255, out_size=127),  # odd input
        dict(width=0),
        dict(out_depth=0),
        dict(stem_channels=-1),
        dict(hourglass_levels=0),
        dict(hourglass_levels=8),  # 128 / 256 < 1
        dict(blocks_per_level=0),
        dict(pre_blocks=-1),
        dict(width=2.5),
    ],
)
def test_invalid_config_raises(changes):
    base = NetworkConfig.paper().to_dict()
    cfg = NetworkConfig(**{**base, **changes})
    with pytest.raises(ValueError):
        cfg.validate()
    with pytest.raises(ValueError):
        TomographyNet(cfg)


def test_valid_non_paper_size():
    cfg = NetworkConfig(input_size=96, out_size=48, out_depth=16, width=16, stem_channels=8)
    assert cfg.validate().min_resolution == 3  # 48 / 2**4
    out = TomographyNet(cfg).eval()(torch.rand(1, 1, 96, 96))
    assert out.shape == (1, 16, 48, 48)


def _hook_flops(config: NetworkConfig) -> int:
    """2 x MACs of conv/deconv layers from their shapes, via forward hooks on a meta forward."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        if isinstance(m, nn.ConvTranspose2d):
            total += 2 * inp[0].numel() * m.out_channels * kh * kw
        else:
            total += 2 * out.numel() * m.in_channels * kh * kw

    net = _meta(config).eval()
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    net(torch.empty(1, *config.input_shape, device="meta"))
    return total


@pytest.mark.parametrize("config", [TINY, NetworkConfig.demo(), NetworkConfig.paper()])
def test_flops_match_layer_shapes(config):
    f = flops_per_sample(config)
    assert f == _hook_flops(config)
    d = describe(config)
    assert d["flops_per_sample"] == f and d["macs_per_sample"] == f // 2
    assert d["output_shape"] == list(config.output_shape)
    assert d["min_resolution"] == config.min_resolution


def test_paper_flops_order_of_magnitude():
    # the 4 deconvolutions alone: sum over levels of 2 * (8..64)^2 * 256 * 256 * 16
    deconv = sum(2 * s * s * 256 * 256 * 16 for s in (8, 16, 32, 64))
    f = flops_per_sample(NetworkConfig.paper())
    assert deconv < f < 200e9


def test_model_info_text():
    txt = model_info_text(NetworkConfig.paper(), "paper")
    n = count_parameters(_meta(NetworkConfig.paper()))
    assert f"{n:,}" in txt and "min resolution 8" in txt and "(B, 128, 128, 128)" in txt


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    net = TomographyNet(TINY).train()
    x = torch.rand(4, 1, 16, 16)
    # a fixed target view volume: depth slices as smooth functions of the pooled input
    pooled = nn.functional.avg_pool2d(x, 2)
    y = torch.cat([pooled * (k + 1) / 4 for k in range(4)], dim=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_output_layer_starts_near_an_empty_volume():
    # targets are mostly empty (density 0, variance ~3e-3): the first prediction should be ~0, not
    # a random volume of order ±1 that the first hundreds of steps must undo
    torch.manual_seed(0)
    net = TomographyNet(NetworkConfig.demo()).train()
    assert float(net.out.bias.detach().abs().max()) == 0.0
    assert float(net.out.weight.detach().std()) < 2e-3
    with torch.no_grad():
        y = net(torch.rand(4, 1, 64, 64))
    assert float(y.abs().max()) < 0.1 and float(y.pow(2).mean()) < 1e-3
