"""FID's dependence on the number of samples: FID / KID of the first n of one set of samples for
several n, against one reference, from a single pass of Inception over the samples; and the same
for n real images of the data set's other split (what a perfect model would score at that n).

FID is biased upwards by roughly c/n (its covariance is estimated from n images), so a 1,000-sample
FID is not the 10,000-sample one the issue targets; this prints how far apart they are.

    python benchmarks/fid_vs_n.py --samples runs/fid10k/mnist.npz --ref mnist:test --data-dir .mnist \\
        --n 1000,2000,5000,10000 --real mnist:train --real-n 2000

Sample features are kept beside the samples (NAME.features.npz, keyed by the samples' digest and the
Inception weights), the reference's and the real images' in ddpm's FID cache, so a second run
takes seconds. `--samples` takes a comma list of files, one set in that order: a set drawn in parts
(`ddpm sample --n 2000`, then `--first 2000 --n 8000`), each part's features computed once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def named_images(ref: str, data_dir: str | None, size: int):
    """(label, loader) of a --ref such as 'mnist:test' at the samples' size, as `ddpm eval fid` reads it."""
    from ddpm.cli_eval import _reference

    return _reference(argparse.Namespace(ref=ref, data_dir=data_dir), None, size)


def _features(path: str, images, extractor, content_id, weights_id) -> np.ndarray:
    """Inception features of ``images`` (the first of the file at ``path``), kept beside it."""
    key = f"{content_id(path)[:16]}-{weights_id(extractor.path)}"
    cached = Path(path).with_suffix(".features.npz")
    if cached.is_file():
        with np.load(cached) as z:
            if str(z["key"]) == key and z["features"].shape[0] >= images.shape[0]:
                return z["features"][:images.shape[0]].astype(np.float64)
    feats = extractor(images, progress=True)
    np.savez(cached, features=feats.astype(np.float32), key=key)
    return feats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help=".npz (arr_0 uint8 NHWC) or image folder; a comma list of "
                   "them is one set in that order")
    p.add_argument("--ref", default="mnist:test", help="the reference set (all of it)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", default="1000,2000,5000,10000", help="comma list of sample counts (the first n)")
    p.add_argument("--real", default=None, help="real images standing in for samples, e.g. mnist:train")
    p.add_argument("--real-n", type=int, default=2000, help="how many of them (the first)")
    args = p.parse_args()
    from ddpm.allocator import keep_freed_memory
    keep_freed_memory()  # as the ddpm command does: CPU steps reuse freed memory

    from ddpm.data.image_sets import content_id, images_from_path
    from ddpm.evaluation.fid import FeatureStats, InceptionFeatures, compare, reference_stats, weights_id

    extractor = InceptionFeatures("cpu")
    parts = [(path, images_from_path(path)) for path in args.samples.split(",")]
    sizes = {images.shape[1:] for _, images in parts}
    if len(sizes) > 1:
        raise SystemExit(f"--samples: the files hold images of different shapes ({sorted(sizes)})")
    total = sum(images.shape[0] for _, images in parts)
    counts = sorted({int(v) for v in args.n.split(",")})
    if counts[0] < 2 or counts[-1] > total:
        raise SystemExit(f"--n: counts must lie in [2, {total}] (the samples), got {args.n}")
    t0 = time.perf_counter()
    ref_label, ref_fn = named_images(args.ref, args.data_dir, parts[0][1].shape[-1])
    reference, ref_label = reference_stats(ref_label, ref_fn, None, extractor, progress=True)
    feats, need = [], counts[-1]
    for path, images in parts:
        if need > 0:
            feats.append(_features(path, images[:need], extractor, content_id, weights_id))
            need -= feats[-1].shape[0]
    feats = np.concatenate(feats)
    rows = [(f"samples[:{n}]", compare(FeatureStats.of(feats[:n]), reference, ref_label)) for n in counts]
    if args.real:
        real_label, real_fn = named_images(args.real, args.data_dir, parts[0][1].shape[-1])
        real, _ = reference_stats(real_label, real_fn, args.real_n, extractor, progress=True)
        for n in [c for c in counts if c <= real.n]:
            rows.append((f"{real_label}[:{n}]", compare(FeatureStats.of(real.features[:n].astype(np.float64)),
                                                        reference, ref_label)))
    print(f"\nsamples: {args.samples} ({total}); reference: {ref_label} ({reference.n} images); "
          f"{time.perf_counter() - t0:.0f} s")
    print("| images | FID | KID ×1e-3 |\n|---|---:|---:|")
    for label, r in rows:
        print(f"| {label} | {r.fid:.2f} | {r.kid * 1e3:.2f} ± {r.kid_std * 1e3:.2f} |")


if __name__ == "__main__":
    main()
