"""The paper's U-Net: sizes, shapes, and the timestep mapping."""

import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.models.unet import UNet, UNetConfig
from ddpm.presets import UNET_PRESETS, celebahq256_unet, cifar10_unet, mnist_unet


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cifar10_preset_has_the_papers_35_7m_parameters():
    assert count(UNet(cifar10_unet())) == 35_746_307  # Ho et al. Table 1 / Appendix B: 35.7M


def test_the_paper_run_presets_are_the_authors_settings():
    """scripts/run_cifar.py, run_celebahq.py and run_lsun.py of the authors' code (hojonathanho/diffusion)."""
    from ddpm.presets import celebahq256, cifar10, lsun256

    for run, variance, lr, batch, steps, dropout in ((cifar10(), "fixed_large", 2e-4, 128, 800_000, 0.1),
                                                     (celebahq256("faces/"), "fixed_small", 2e-5, 64, 500_000, 0.0),
                                                     (lsun256("church/"), "fixed_small", 2e-5, 64, 1_200_000, 0.0)):
        d, o = run.diffusion, run.optim
        assert (d.T, d.schedule, d.parameterization, d.loss, d.clip_x0, d.variance) == (
            1000, "linear", "eps", "simple", True, variance)
        assert (o.lr, o.warmup, o.grad_clip, o.ema_decay, o.batch_size) == (lr, 5000, 1.0, 0.9999, batch)
        assert (run.steps, run.model.dropout, run.data.random_flip) == (steps, dropout, True)
        assert d.make_schedule().beta[1] == pytest.approx(1e-4) and d.make_schedule().beta[-1] == pytest.approx(0.02)


def test_256_presets_have_about_114m_parameters():
    assert count(UNet(celebahq256_unet())) == pytest.approx(114e6, rel=0.01)


def test_learned_variance_doubles_the_output():
    cfg = UNetConfig(image_size=8, in_channels=2, out_channels=4, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(4,), num_groups=8)
    out = UNet(cfg)(torch.randn(3, 2, 8, 8), torch.tensor([1, 5, 10]))
    assert out.shape == (3, 4, 8, 8)


@pytest.mark.parametrize("name", list(UNET_PRESETS))
def test_presets_are_valid_configs(name):
    cfg = UNET_PRESETS[name]()
    assert cfg.image_size % 2 ** (len(cfg.ch_mult) - 1) == 0


def test_mnist_preset_runs_forward_and_backward():
    cfg = mnist_unet()
    model = UNet(cfg)
    x = torch.randn(2, 1, cfg.image_size, cfg.image_size)
    out = model(x, torch.tensor([1, 1000]))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_output_depends_on_t_and_is_zero_at_init_of_the_last_layer():
    cfg = UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(4,), num_groups=8, dropout=0.0)
    model = UNet(cfg).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.all(model(x, torch.tensor([1, 2])) == 0)  # conv_out starts at zero, as the authors'
    with torch.no_grad():  # undo every zero init (conv2 of each block, attention output, conv_out)
        for p in model.parameters():
            if p.dim() > 1 and torch.all(p == 0):
                p.normal_(0, 0.05)
    a, b = model(x[:1], torch.tensor([1])), model(x[:1], torch.tensor([500]))
    assert not torch.allclose(a, b)


def test_bad_unet_configs():
    with pytest.raises(ConfigError, match="divisible by 2\\^3"):
        UNetConfig(image_size=28, ch_mult=(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="not divisible by 32 groups"):
        UNetConfig(ch=48)
    with pytest.raises(ConfigError, match="dropout"):
        UNetConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="attention at 16, but the feature maps are 28, 14, 7"):
        UNetConfig(image_size=28, ch_mult=(1, 2, 2))  # the default attention (16) would silently be nowhere


@pytest.mark.parametrize("bf16", [False, True])
def test_the_network_traces_as_one_graph(bf16):
    """torch.compile (``--compile``) sees the whole U-Net, class embedding and attention included, as
    one graph: no break (a read back from the device, a data-dependent branch) splits it, so on a GPU
    it compiles into one fused program. Dynamo's trace alone, without its compiler: seconds on a CPU."""
    cfg = UNetConfig(image_size=16, in_channels=3, out_channels=3, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(8,), num_groups=8, num_classes=10)
    net = UNet(cfg)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.tensor([3, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        explained = torch._dynamo.explain(net)(x, t, y)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1
