"""diffusers' UNet2DModel in the DDPM configuration converts both ways with the same output."""

import json
import warnings

import numpy as np
import pytest
import torch

from ddpm.api import load
from ddpm.cli_info import describe
from ddpm.errors import CheckpointError
from ddpm.interop import export_diffusers, import_diffusers
from ddpm.models.diffusers_interop import diffusers_config_from_unet
from ddpm.models.unet import UNetConfig

diffusers = pytest.importorskip("diffusers")
warnings.filterwarnings("ignore", category=FutureWarning)

SMALL = UNetConfig(image_size=16, in_channels=3, out_channels=3, ch=32, ch_mult=(1, 2, 2), num_res_blocks=2,
                   attn_resolutions=(8,), dropout=0.0)


def random_reference(config: UNetConfig):
    kwargs = {k: v for k, v in diffusers_config_from_unet(config).items() if not k.startswith("_")}
    torch.manual_seed(0)
    ref = diffusers.UNet2DModel(**kwargs).eval()
    with torch.no_grad():  # diffusers zero-initialises nothing, but make every layer matter anyway
        for p in ref.parameters():
            p.normal_(0, 0.05)
    return ref


def test_cifar10_layout_matches_diffusers_parameter_count():
    ref = diffusers.UNet2DModel(**{k: v for k, v in diffusers_config_from_unet(UNetConfig()).items()
                                   if not k.startswith("_")})
    assert sum(p.numel() for p in ref.parameters()) == 35_746_307


def test_import_gives_the_same_output_and_export_round_trips(tmp_path):
    ref = random_reference(SMALL)
    ref.save_pretrained(tmp_path / "src", safe_serialization=True)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large",
                                    clip_sample=True)
    sched.save_config(tmp_path / "src")
    import_diffusers(tmp_path / "src", tmp_path / "run")
    loaded = load(tmp_path / "run")
    assert loaded.kind == "image" and loaded.prediction.variance == "fixed_large" and loaded.schedule.T == 1000
    assert torch.allclose(loaded.schedule.betas.float(), sched.betas, atol=1e-9)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 500, 1000])  # ours; diffusers counts from 0
    with torch.no_grad():
        ours, theirs = loaded.model(x, t), ref(x, t - 1).sample
    assert (ours - theirs).abs().max() < 1e-5
    facts = dict(describe(tmp_path / "run"))  # `ddpm info`: where it came from, diffusers' parameter count
    assert facts["imported"] == f"diffusers:{(tmp_path / 'src').resolve()} (its training is not recorded here)"
    assert "step" not in facts and "optimizer" not in facts  # the import's defaults, not how it was trained
    assert facts["diffusion"].startswith("T 1000, linear β 0.0001 → 0.02; predicts eps")  # β_1, β_T said once
    assert f"({sum(p.numel() for p in ref.parameters()):,})" in facts["network"]

    export_diffusers(tmp_path / "run", tmp_path / "back")
    again = diffusers.UNet2DModel.from_pretrained(tmp_path / "back").eval()
    for (k, a), (k2, b) in zip(sorted(ref.state_dict().items()), sorted(again.state_dict().items())):
        assert k == k2 and torch.equal(a, b)
    cfg = json.loads((tmp_path / "back" / "scheduler_config.json").read_text())
    assert cfg["variance_type"] == "fixed_large" and cfg["num_train_timesteps"] == 1000
    # neither direction writes into a folder that holds something: a run's config.json would be replaced
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(CheckpointError, match="run: already exists; give a new folder"):
        import_diffusers(tmp_path / "back", tmp_path / "run")
    with pytest.raises(CheckpointError, match="back: already exists; give a new folder"):
        export_diffusers(tmp_path / "run", tmp_path / "back")
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    (tmp_path / "empty").mkdir()
    export_diffusers(tmp_path / "run", tmp_path / "empty")  # an empty folder is fine


def test_non_ddpm_layouts_and_pickles_are_refused(tmp_path):
    ref = random_reference(SMALL)
    ref.save_pretrained(tmp_path / "src", safe_serialization=True)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    cfg["flip_sin_to_cos"] = True
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="flip_sin_to_cos = True"):
        import_diffusers(tmp_path / "src", tmp_path / "run")
    (tmp_path / "src" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "src" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="is a pickle and is never loaded"):
        import_diffusers(tmp_path / "src", tmp_path / "run")


def test_a_class_conditional_network_round_trips_with_num_class_embeds(tmp_path):
    from dataclasses import replace

    config = replace(SMALL, num_classes=4)
    assert diffusers_config_from_unet(config)["num_class_embeds"] == 5  # four classes and "no class"
    ref = random_reference(config)
    ref.save_pretrained(tmp_path / "src", safe_serialization=True)
    import_diffusers(tmp_path / "src", tmp_path / "run")
    loaded = load(tmp_path / "run")
    assert loaded.num_classes == 4
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([1, 500, 1000]), torch.tensor([0, 3, 4])  # 4: no class
    with torch.no_grad():
        ours, theirs = loaded.model(x, t, y), ref(x, t - 1, class_labels=y).sample
    assert (ours - theirs).abs().max() < 1e-5
    export_diffusers(tmp_path / "run", tmp_path / "back")
    again = diffusers.UNet2DModel.from_pretrained(tmp_path / "back").eval()
    assert again.config.num_class_embeds == 5
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), again.state_dict().values()))


def test_a_network_chosen_on_the_command_line_trains_and_exports_with_the_same_output(tmp_path, capsys):
    from ddpm.cli import main

    net = ["--image-size", "12", "--num-channels", "16", "--channel-mult", "1,2", "--num-res-blocks", "2",
           "--attention-resolutions", "6", "--dropout", "0.1", "--num-groups", "4"]
    assert main(["train", "--preset", "digits", *net, "--T", "10", "--steps", "2", "--batch-size", "8", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    loaded = load(tmp_path / "run")
    n = sum(p.numel() for p in loaded.model.parameters())
    assert f"network: UNet, {n:,} parameters" in capsys.readouterr().err  # said at the start of the run
    c = loaded.config.model
    assert (c.image_size, c.ch, c.ch_mult, c.num_res_blocks, c.attn_resolutions, c.dropout, c.num_groups) == \
        (12, 16, (1, 2), 2, (6,), 0.1, 4)
    assert loaded.config.data.image_size == 12  # the 8×8 digits padded to the network's size
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (2, 12, 12, 1)
    assert main(["export-diffusers", str(tmp_path / "run"), str(tmp_path / "d")]) == 0
    theirs = diffusers.UNet2DModel.from_pretrained(tmp_path / "d").eval()
    x, t = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 5, 10])
    with torch.no_grad():
        assert (loaded.model(x, t) - theirs(x, t - 1).sample).abs().max() < 1e-5
    capsys.readouterr()


def test_an_import_records_what_the_weights_were_trained_on(tmp_path, capsys):
    from PIL import Image

    from ddpm.cli import main
    from ddpm.errors import ConfigError

    random_reference(SMALL).save_pretrained(tmp_path / "src", safe_serialization=True)
    (tmp_path / "faces").mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "faces" / f"{i}.png")
    import_diffusers(tmp_path / "src", tmp_path / "run", data=str(tmp_path / "faces"))
    data = load(tmp_path / "run").config.data
    assert data.dataset == "folder" and data.path == str(tmp_path / "faces")
    nll = ["eval", "nll", "--n", "2", "--terms", "2", "--quiet", "--out"]
    assert main([*nll, str(tmp_path / "nll"), "--checkpoint", str(tmp_path / "run")]) == 0  # reads the folder
    import_diffusers(tmp_path / "src", tmp_path / "bare")
    capsys.readouterr()
    assert main([*nll, str(tmp_path / "nll2"), "--checkpoint", str(tmp_path / "bare")]) == 2
    assert "names no data set (a diffusers import?): import it with --data" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--data mnist: data.channels: mnist images have 1 channel\\(s\\), not 3"):
        import_diffusers(tmp_path / "src", tmp_path / "m", data="mnist")
    with pytest.raises(ConfigError, match="--data-dir: give --data too"):
        import_diffusers(tmp_path / "src", tmp_path / "m", data_dir=str(tmp_path))
    assert not (tmp_path / "m").exists()
