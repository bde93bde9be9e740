"""Bad arguments and hostile files: each is refused with one line on stderr and exit status 2,
no traceback, nothing written, and no pickle payload ever runs."""

import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from ddpm.cli import main

pytest.importorskip("sklearn")

POINTS = ["--data", "gmm", "--T", "20", "--hidden", "16", "--blocks", "1", "--batch-size", "16", "--quiet"]


class Payload:
    """Unpickling this runs os.system: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("points")
    assert main(["train", *POINTS, "--steps", "2", "--checkpoint-every", "2", "--out", str(out)]) == 0
    return out


def refused(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and "Traceback" not in err[0], (argv, err)
    assert re.search(message, err[0]), (argv, err[0])


BAD_ARGUMENTS = [
    (["sample", "--checkpoint", "{run}", "--eta", "nan", "--sampler", "ddim"], "finite number, got nan"),
    (["sample", "--checkpoint", "{run}", "--eta", "inf", "--sampler", "ddim"], "finite number, got inf"),
    (["sample", "--checkpoint", "{run}", "--seed", str(2**70)], r"a seed must lie in \[0, 18446744073709551615\]"),
    (["sample", "--checkpoint", "{run}", "--seed", "-1"], "a seed must lie in"),
    (["sample", "--checkpoint", "{run}", "--first", "-1"], r"must lie in \[0, "),
    (["sample", "--checkpoint", "{run}", "--first", str(2**63 - 3), "--n", "4", "--out", "{tmp}/s.npy"],
     "--first 9223372036854775805 with --n 4: sample indices must stay below 2"),
    (["sample", "--checkpoint", "{run}", "--batch-size", str(10**12)], r"a batch size must lie in .*1048576\]"),
    (["sample", "--checkpoint", "{run}", "--n", str(10**30)], "an integer must lie in"),
    (["sample", "--checkpoint", "{run}", "--out", "{tmp}/x.jpg"], "2-D samples are written as .npy"),
    (["train", *POINTS, "--out", "{run}/config.json"], "config.json: exists and is not a folder"),
    (["sample", "--checkpoint", "{run}", "--device", "tpu:9"], "--device 'tpu:9': not a device name; use cpu or cuda"),
    (["sample", "--checkpoint", "{run}", "--device", "meta"], "--device meta: use cpu or cuda"),
    pytest.param(["sample", "--checkpoint", "{run}", "--device", "cuda"], "sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    pytest.param(["train", *POINTS, "--device", "cuda"], "sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["train", *POINTS, "--device", "tpu"], "--device 'tpu': not a device name; use cpu or cuda"),
    (["train", *POINTS, "--device", "meta"], "--device meta: use cpu or cuda"),
    (["train", "--preset", "cifar10", "--data", "mnist", "--steps", "1"],
     r"data.channels: mnist images have 1 channel\(s\), not 3"),
    (["train", *POINTS, "--lr", "nan"], "finite number, got nan"),
    (["train", *POINTS, "--lr", "inf"], "finite number, got inf"),
    (["train", *POINTS, "--grad-clip", "nan"], "finite number"),
    (["train", *POINTS, "--ema-decay=-inf"], "finite number"),
    (["train", *POINTS, "--time-limit", "nan"], "finite number"),
    (["train", *POINTS, "--schedule-param", "beta_end=nan"], "beta_end: must be a finite number"),
    (["train", *POINTS, "--schedule-param", "foo=1"],
     "schedule 'linear' has no parameter foo; its parameters: beta_start, "),
    (["train", *POINTS, "--seed", str(2**70)], "a seed must lie in"),
    (["train", *POINTS, "--batch-size", str(10**12)], "a batch size must lie in"),
    (["train", *POINTS, "--T", str(10**20)], "an integer must lie in"),
    (["train", *POINTS, "--data-dir", "{tmp}"], r"--data-dir: not read by a 2-D run \(--data gmm; for images: "
                                                 "--data mnist, digits, cifar10, folder or --preset"),
    (["train", *POINTS, "--random-flip"], "--random-flip: not read by a 2-D run"),
    (["train", "--preset", "digits", "--data-dir", "{tmp}"], "digits data set comes with scikit-learn"),
    (["train", "--preset", "mnist", "--hidden", "64"], "--hidden: not read by an image run"),
    (["train", *POINTS, "--num-channels", "64"], "--num-channels: not read by a 2-D run"),
    (["train", *POINTS, "--dropout", "0"], "--dropout: not read by a 2-D run"),
    (["train", "--preset", "mnist", "--num-channels", "40"], "--num-channels 40: .*not divisible by 16 groups"),
    (["train", "--preset", "mnist", "--channel-mult", "1,2,2,2"], "--channel-mult 1,2,2,2: .*28 must be divisible"),
    (["train", "--preset", "mnist", "--image-size", "32"], "--image-size 32: .*attention at 7, but the feature "
     "maps are 32, 16, 8"),
    (["train", "--preset", "mnist", "--channel-mult", "1,x"], "comma-separated integers >= 1, got '1,x'"),
    (["train", "--preset", "mnist", "--dropout", "1"], r"must lie in \[0, 1\), got 1"),
    (["train", "--preset", "cifar10", "--image-size", "64", "--data-dir", "{tmp}"], "--image-size 64: "
     "data.image_size: cifar10 images are 32×32, not 64"),
    (["train", "--preset", "mnist", "--image-size", "24", "--attention-resolutions", "6"], "mnist images are 28×28"),
    (["train", "--preset", "digits", "--precision", "fp64"], "invalid choice: 'fp64'"),
    (["train", "--preset", "digits", "--batch-size", "16", "--grad-accum", "17"], "grad_accum 17: more "
     "micro-batches than the batch's 16 examples"),
    (["train", *POINTS, "--grad-accum", "0"], "grad_accum must be an integer >= 1, got 0"),
    (["train", *POINTS, "--hidden", "0"],
     r"^ddpm train: error: --hidden 0, --blocks 1: MLPConfig.hidden must be >= 1, got 0$"),
    (["train", *POINTS, "--resume", "{tmp}/nowhere"], "nowhere: no such checkpoint"),
    (["eval", "nll", "--checkpoint", "{run}", "--n", "0"], "--n must be >= 1"),
    (["eval", "nll", "--checkpoint", "{run}", "--out", "{tmp}/nll.json"], "eval nll writes a folder"),  # (it made one)
    (["eval", "fid", "--samples", "{tmp}/none.npz", "--ref", "{tmp}/none2.npz", "--ref-n", "1"], "ref-n must be >= 2|no such file"),
    (["progressive", "--checkpoint", "{run}", "--out", "{tmp}/p.png", "--t", "30"], r"outside \[0, 20\]"),
    (["progressive", "--checkpoint", "{run}", "--out", "{tmp}/p.png", "--t", "5,30"], r"t = 30 is outside \[0, 20\]"),
    (["progressive", "--checkpoint", "{run}", "--out", "{tmp}/p.png", "--t", "a,b"], "comma-separated integers"),
    (["data", "check", "{tmp}", "--image-size", "0"], r"an image size must lie in \[1, 8192\], got 0"),
    (["interpolate", "--checkpoint", "{run}", "--out", "{tmp}/i"], "works on image checkpoints"),
    (["interpolate", "--checkpoint", "{run}", "--out", "{tmp}/i.png"], "interpolate writes a folder"),
    (["progressive", "--checkpoint", "{run}", "--out", "{tmp}/p"],
     "progressive writes one picture; give a name ending in .png"),
    (["export-diffusers", "{run}", "{tmp}/d"], "only image .U-Net. checkpoints"),
    # an option the command does not take is named with the command, whose --help lists what it takes
    (["pack", "{run}", "--out", "{tmp}/p"],
     r"^ddpm pack: error: unrecognized arguments: --out \(see ddpm pack --help\)$"),
    (["eval", "fid", "--samples", "{tmp}/s.npz", "--lambdas", "2"],
     r"^ddpm eval fid: error: unrecognized arguments: --lambdas 2 \(see ddpm eval fid --help\)$"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS)
def test_a_bad_argument_is_one_line_and_exit_status_2(run, tmp_path, capsys, argv, message):
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "new")]
    before = set(tmp_path.rglob("*"))
    refused(capsys, argv, message)
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even an empty folder


def test_mnist_is_not_exported_over_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    refused(capsys, ["data", "export-mnist", str(tmp_path / "f")], "f: exists and is not a folder")
    assert (tmp_path / "f").read_text() == "mine"


def test_an_unknown_reference_is_named_with_the_ones_there_are(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", np.zeros((2, 8, 8, 1), np.uint8))
    refused(capsys, ["eval", "fid", "--samples", str(tmp_path / "s.npz"), "--ref", "nosuch:test"],
            r"--ref nosuch:test: no such file or folder, nor a data set \(mnist, cifar10 or digits")


# ---------------------------------------------------------------- hostile files


def _pickled_npz(path, marker):
    np.savez(path, arr_0=np.array([Payload(marker)], dtype=object))


def _npy_named_npz(path, marker):
    np.save(path.with_suffix(".npy"), np.zeros((2, 8, 8, 1), np.uint8))
    path.with_suffix(".npy").rename(path)


def _huge_npy(path, marker):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (200000000000, 2), }"
    header += " " * (118 - len(header)) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64))


def _pickled_npy(path, marker):
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)


def _cifar_batches(folder, marker):
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Payload(marker)}))


def _huge_cifar_batches(folder, marker):
    """Batches whose array claims 1e12 elements (a real array pickle with its shape patched)."""
    folder.mkdir()
    blob = pickle.dumps({b"data": np.zeros(16, np.uint8)}, protocol=2)
    assert blob.count(b"K\x10\x85") == 1  # the shape (16,)
    blob = blob.replace(b"K\x10\x85", pickle.dumps(10**12, protocol=2)[2:-1] + b"\x85")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(blob)


def _diffusers_bin(folder, marker):
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 8}')
    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))


def _truncated_mnist(folder, marker):
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 28, 28) + b"\0" * 99)


def _not_png(path, marker):
    path.write_bytes(b"not a png at all")


def _folder_with_a_bad_png(folder, marker):
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)


HOSTILE = [
    ("pickled .npz as samples", _pickled_npz, "s.npz", ["eval", "fid", "--samples", "{f}", "--ref", "{f}"],
     r"s.npz: its arr_0 is not readable: it holds Python objects \(pickled\), which are never loaded|Inception"),
    ("an .npy named .npz as samples", _npy_named_npz, "s.npz", ["eval", "fid", "--samples", "{f}", "--ref", "{f}"],
     r"s.npz: not an .npz file \(an .npy under another name\)"),
    ("text named .npz as samples", _not_png, "t.npz", ["eval", "fid", "--samples", "{f}", "--ref", "{f}"],
     r"t.npz: not an .npz file \(its first bytes are neither .npy's nor .npz's\)"),
    ("pickled .npy as 2-D data", _pickled_npy, "p.npy", ["train", *POINTS, "--data", "{f}"],
     r"p.npy: cannot read points: it holds Python objects \(pickled\), which are never loaded"),
    ("1e11-element .npy header", _huge_npy, "h.npy", ["train", *POINTS, "--data", "{f}"], "header claims shape"),
    ("CIFAR batches calling os.system", _cifar_batches, "cifar", ["train", "--preset", "cifar10", "--data-dir", "{f}"],
     "refusing to load posix.system|refusing to load os.system"),
    ("CIFAR batch of 1e12 elements", _huge_cifar_batches, "cifar", ["train", "--preset", "cifar10", "--data-dir", "{f}"],
     "not a readable array pickle"),
    ("diffusers .bin pickle", _diffusers_bin, "unet", ["import-diffusers", "{f}", "{tmp}/out"], "is a pickle and is never loaded"),
    ("text named .png as samples", _not_png, "bad.png", ["eval", "fid", "--samples", "{f}", "--ref", "{f}"],
     "bad.png: not an image despite its .png extension"),
    ("broken PNG in a folder of samples", _folder_with_a_bad_png, "pngs", ["eval", "fid", "--samples", "{f}",
     "--ref", "{f}"], r"a.png: (unreadable|not an image)"),
    ("truncated MNIST idx", _truncated_mnist, "mnist", ["train", "--preset", "mnist", "--data-dir", "{f}"], "truncated"),
]


@pytest.mark.parametrize("name, make, filename, argv, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_file_is_refused_and_runs_nothing(tmp_path, capsys, name, make, filename, argv, message):
    marker = tmp_path / "PAYLOAD_RAN"
    make(tmp_path / filename, marker)
    argv = [a.replace("{f}", str(tmp_path / filename)).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run"), "--steps", "1"]
    before = set(tmp_path.rglob("*"))
    refused(capsys, argv, message)
    assert not marker.exists()
    assert set(tmp_path.rglob("*")) == before  # no run folder, no output left behind


def _checkpoint_with(run, tmp_path, name, data):
    """A copy of the run whose newest checkpoint has ``name`` replaced and no digests (as 0.1.0 wrote)."""
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    ckpt = sorted((copy / "checkpoints").iterdir())[-1]
    state = json.loads((ckpt / "state.json").read_text())
    state.pop("sha256")
    (ckpt / "state.json").write_text(json.dumps(state))
    (ckpt / name).write_bytes(data)
    return copy


def _safetensors(header: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


HOSTILE_SAFETENSORS = [
    ("header length 1e12", _safetensors(b"{}", length=10**12)),
    ("header past the end", _safetensors(b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', b"\0" * 4)),
    ("1e12 elements", _safetensors(b'{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,16]}}', b"\0" * 16)),
    ("overlapping offsets", _safetensors(b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
                                         b'"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}', b"\0" * 24)),
    ("not JSON", _safetensors(b"\xff\xfe{{{")),
    ("empty file", b""),
]


@pytest.mark.parametrize("what, data", HOSTILE_SAFETENSORS, ids=[h[0] for h in HOSTILE_SAFETENSORS])
def test_a_hostile_safetensors_file_is_refused_in_one_line(run, tmp_path, capsys, what, data):
    copy = _checkpoint_with(run, tmp_path, "ema.safetensors", data)
    refused(capsys, ["sample", "--checkpoint", str(copy), "--n", "2", "--out", str(tmp_path / "s.npy")],
            "ema.safetensors: unreadable safetensors file")
    assert not (tmp_path / "s.npy").exists()
