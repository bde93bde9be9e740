import pytest
import torch

from ddpm.schedules import NoiseSchedule, make_betas

SCHEDULE_CASES = [
    ("linear", 1000, {}),
    ("cosine", 1000, {}),
    ("seed_code", 1000, {}),
    ("seed_formula", 1000, {}),
    ("sigmoid", 200, {}),
    ("quadratic", 200, {}),
    ("constant", 50, {"beta": 0.05}),
    ("jsd", 30, {}),
]


@pytest.fixture(params=SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def any_schedule(request) -> NoiseSchedule:
    name, T, params = request.param
    return NoiseSchedule(make_betas(name, T, **params))


@pytest.fixture
def paper_schedule() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear", 1000)


def rand_t(schedule: NoiseSchedule, n: int, g: torch.Generator, low: int = 1) -> torch.Tensor:
    return torch.randint(low, schedule.T + 1, (n,), generator=g)
