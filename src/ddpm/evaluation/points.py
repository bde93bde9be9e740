"""2-D checkpoints measured: the bound in nats per point, and distances between sets of points."""

from __future__ import annotations

import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """SW_2: the root mean over random unit directions θ of W_2²(θᵀx, θᵀy).

    For sets of equal size W_2 on a line pairs the sorted projections; unequal sets are
    compared through matching quantiles.
    """
    x, y = x.double(), y.double()
    theta = torch.randn(num_projections, x.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)  # (P, D)
    px, _ = torch.sort(x @ theta.T, dim=0)  # (N, P)
    py, _ = torch.sort(y @ theta.T, dim=0)  # (M, P)
    if px.shape[0] != py.shape[0]:
        q = torch.linspace(0, 1, max(px.shape[0], py.shape[0]), dtype=torch.float64)
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """D² = 2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ (Székely & Rizzo), V-statistic form."""
    x, y = x.double(), y.double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def evaluate_points(loaded, n: int = 4000, seed: int = 0, timesteps: int | None = None) -> dict:
    """A 2-D checkpoint's bound in nats per point (in the data's own units) on fresh data, the
    exact NLL of that data under its generating mixture where known, and the sliced Wasserstein
    and energy distances of n samples to fresh data next to the floor between two fresh sets.

    Fresh data are new draws for the built-in sets; for a file they are its own points
    (split in halves for the floor). ``timesteps`` uses the unbiased few-term estimate.
    """
    import math

    from ..data.points import load_points
    from ..generation import generate
    from .nll import bound_estimate, variational_bound

    data = load_points(loaded.config.data, labelled=loaded.num_classes > 0)
    standardizer = loaded.codec.standardizer
    g = torch.Generator().manual_seed(seed)
    if data.points is None:
        fresh, fresh2 = data.sample(n, g).double(), data.sample(n, g).double()
    else:
        perm = torch.randperm(data.points.shape[0], generator=g)
        half = data.points.shape[0] // 2
        fresh, fresh2 = data.points[perm[:half]].double(), data.points[perm[half:2 * half]].double()
    y = loaded.codec.encode(fresh)
    pred = loaded.prediction
    decoder = loaded.config.diffusion.decoder
    if timesteps is None:
        total = variational_bound(loaded.model, loaded.schedule, y, pred, decoder, generator=g).total
        evals = loaded.schedule.T
    else:
        est = bound_estimate(loaded.model, loaded.schedule, y, timesteps, pred, decoder, generator=g)
        total, evals = est.total, est.network_evaluations
    nats = total - standardizer.log_abs_det()  # back to the data's units
    many = nats.shape[0] > 1  # one point has no standard error (None, as for images; not NaN in the JSON)
    result = {"points": int(fresh.shape[0]), "bound_nats_per_point": float(nats.mean()),
              "bound_standard_error": float(nats.std() / math.sqrt(nats.shape[0])) if many else None,
              "network_evaluations_per_point": evals, "seed": seed}
    se = f" ± {result['bound_standard_error']:.4f}" if many else ""
    lines = [f"bound {result['bound_nats_per_point']:.4f}{se} nats/point "
             f"({'all T terms' if timesteps is None else f'estimate from {timesteps} terms'}, "
             f"{result['points']} fresh points)"]
    if data.mixture is not None:
        exact = float(-data.mixture.log_prob(fresh).mean())
        result["exact_nll_nats_per_point"] = exact
        lines.append(f"exact NLL of the same points under the generating mixture: {exact:.4f} nats/point")
    samples = generate(loaded, fresh.shape[0], seed + 1).data.double()
    gp = torch.Generator().manual_seed(seed + 2)
    result.update({
        "sliced_wasserstein": sliced_wasserstein(samples, fresh, generator=gp),
        "sliced_wasserstein_floor": sliced_wasserstein(fresh2, fresh, generator=torch.Generator().manual_seed(seed + 2)),
        "energy_distance": energy_distance(samples, fresh),
        "energy_distance_floor": energy_distance(fresh2, fresh),
    })
    lines.append(f"sliced W2 {result['sliced_wasserstein']:.4f} (floor between two fresh sets "
                 f"{result['sliced_wasserstein_floor']:.4f}); energy distance {result['energy_distance']:.5f} "
                 f"(floor {result['energy_distance_floor']:.5f})")
    result["lines"] = lines
    return result
