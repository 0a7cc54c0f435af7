"""scripts/results_table.py's hierarchical interval: it must widen with the variation between
training seeds, which an interval over scenes alone misses, and stay paired over scenes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import results_table as rt  # noqa: E402

N = 600


def run(successes: int, offset: int = 0) -> list:
    """One training seed's per-episode successes: `successes` of N episodes, starting at `offset`."""
    return [1.0 if (i - offset) % N < successes else 0.0 for i in range(N)]


def width(interval) -> float:
    _, lo, hi = interval
    return hi - lo


def test_seeds_that_disagree_widen_the_interval_beyond_the_scenes_alone():
    agreeing = [run(420)] * 5
    disagreeing = [run(300), run(540), run(360), run(480), run(420)]  # the same mean, 70 %
    same, spread = rt.hierarchical_interval((1, agreeing)), rt.hierarchical_interval((1, disagreeing))
    assert abs(same[0] - 0.7) < 1e-9 and abs(spread[0] - 0.7) < 1e-9
    assert width(spread) > 2 * width(same), (same, spread)
    assert spread[1] < 0.62 and spread[2] > 0.78


def test_a_paired_comparison_of_identical_arms_is_exactly_zero_and_a_real_gap_is_found():
    same = rt.hierarchical_interval((1, [run(360)]), (-1, [run(360)]))
    assert same == (0.0, 0.0, 0.0), "the same runs on the same scene draws differ by nothing"
    better = [run(480, offset=k) for k in range(5)]
    worse = [run(360, offset=k) for k in range(5)]
    estimate, lo, hi = rt.hierarchical_interval((1, better), (-1, worse))
    assert abs(estimate - 0.2) < 1e-9 and 0 < lo < 0.2 < hi


def test_the_interval_is_the_same_every_time():
    arm = [run(300), run(400), run(350)]
    assert rt.hierarchical_interval((1, arm)) == rt.hierarchical_interval((1, arm))
