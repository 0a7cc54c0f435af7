#!/usr/bin/env python3
"""Results table with 95 % intervals from `moe_vla eval --json` reports.

Every report must come from the same `--episodes` and `--seed`, so episode i is the same scene for
every policy and comparisons are paired. An arm may have several reports (training seeds): its
per-episode success is averaged over them first.

    scripts/results_table.py "MoE Q=q1.json,q2.json,q3.json" "MoE BC=b1.json,b2.json" \
        --compare "MoE Q" "MoE BC"

prints a Markdown table (success % per family, seen, held-out, all with its interval, the seeds'
own values) and, for each --compare A B, the paired difference A - B with its interval.

The intervals are hierarchical: a bootstrap that resamples an arm's training seeds and the scenes
(the same scenes for both arms of a comparison, which are paired), so they include the variation
between training runs as well as between scenes. With one seed an arm's interval covers scenes
only, which says nothing about another training run: a claim about an arm needs at least 5 seeds.

The tables of docs/experiments.md are made with the same functions by scripts/experiments_tables.py.
"""
import argparse
import json
import random
import sys

FAMILIES = ["go_to", "distinguish", "go_avoid", "go_through", "crawl", "stop"]
# Bootstrap replicates, and the seed of their draws: the same reports always give the same interval.
REPLICATES = 2000
BOOTSTRAP_SEED = 2026
# Training seeds an arm needs before its interval speaks for the training recipe.
MIN_SEEDS = 5


def load_arm(spec):
    label, _, paths = spec.partition("=")
    if not paths:
        sys.exit(f"arm {spec!r}: expected LABEL=report.json[,report.json...]")
    reports = []
    for path in paths.split(","):
        with open(path) as f:
            reports.append(json.load(f))
    return label, reports


def episode_means(reports):
    """Per episode: (family, held_out, mean success over the reports)."""
    runs = [r["per_episode"] for r in reports]
    n = len(runs[0])
    if any(len(r) != n for r in runs):
        sys.exit("reports of one arm have different episode counts")
    out = []
    for i in range(n):
        first = runs[0][i]
        out.append((first["family"], first["held_out"], sum(r[i]["success"] for r in runs) / len(runs)))
    return out


def successes(reports, keep=None):
    """Per training seed (report), the 0/1 success of each episode `keep(family, held_out)` admits."""
    runs = [r["per_episode"] for r in reports]
    if any(len(r) != len(runs[0]) for r in runs):
        sys.exit("reports of one arm have different episode counts")
    return [[float(e["success"]) for e in run if keep is None or keep(e["family"], e["held_out"])] for run in runs]


_scene_draws = {}


def scene_draws(n):
    """REPLICATES resamplings (with replacement) of n scenes, drawn once and shared: every interval
    over the same scenes uses the same draws, and the two arms of a comparison stay paired."""
    if n not in _scene_draws:
        rng = random.Random(BOOTSTRAP_SEED ^ n)
        _scene_draws[n] = [rng.choices(range(n), k=n) for _ in range(REPLICATES)]
    return _scene_draws[n]


_totals = {}


def scene_totals(run):
    """A run's successes summed over each replicate's scene draw (cached: a report often serves
    several rows and comparisons)."""
    key = tuple(run)
    if key not in _totals:
        _totals[key] = [sum(map(run.__getitem__, draw)) for draw in scene_draws(len(run))]
    return _totals[key]


def hierarchical_interval(*signed_arms):
    """Estimate and 95 % percentile interval of sum(sign * mean success) over (sign, runs) arms,
    `runs` as `successes` gives them (every run over the same scenes): each replicate resamples the
    scenes (shared by the arms) and each arm's training seeds."""
    n = len(signed_arms[0][1][0])
    if any(len(run) != n for _, runs in signed_arms for run in runs):
        sys.exit("arms of one interval cover different scenes")
    rng = random.Random(BOOTSTRAP_SEED)
    estimate = sum(sign * sum(map(sum, runs)) / (len(runs) * n) for sign, runs in signed_arms)
    arms = [(sign, [scene_totals(run) for run in runs]) for sign, runs in signed_arms]
    values = []
    for r in range(REPLICATES):
        total = 0.0
        for sign, totals in arms:
            k = len(totals)
            picked = sum(totals[rng.randrange(k)][r] for _ in range(k)) if k > 1 else totals[0][r]
            total += sign * picked / (k * n)
        values.append(total)
    values.sort()
    lo, hi = values[int(0.025 * REPLICATES)], values[int(0.975 * REPLICATES) - 1]
    return estimate, lo, hi


def pct(x):
    return f"{100 * x:.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arms", nargs="+", help="LABEL=report.json[,report.json...]")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"))
    args = parser.parse_args()
    arms = dict(load_arm(spec) for spec in args.arms)
    seeds = {r["seed"] for reports in arms.values() for r in reports}
    counts = {r["episodes"] for reports in arms.values() for r in reports}
    if len(seeds) != 1 or len(counts) != 1:
        sys.exit(f"every report must share one evaluation seed and episode count (seeds {seeds}, episodes {counts})")
    print(f"{counts.pop()} episodes, evaluation seed {seeds.pop()}; success in %, 95 % interval over training seeds "
          f"and scenes († fewer than {MIN_SEEDS} seeds: it understates the variation between training runs)\n")
    header = ["policy", "runs"] + FAMILIES + ["seen", "held-out", "all (95 % CI)", "each run"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, reports in arms.items():
        eps = episode_means(reports)
        row = [label, str(len(reports))]
        for fam in FAMILIES:
            vals = [m for f, _, m in eps if f == fam]
            row.append(pct(sum(vals) / len(vals)) if vals else "-")
        for held in (False, True):
            vals = [m for _, h, m in eps if h == held]
            row.append(pct(sum(vals) / len(vals)) if vals else "-")
        mean, lo, hi = hierarchical_interval((1, successes(reports)))
        row.append(f"**{pct(mean)}** ({pct(lo)} to {pct(hi)}){'' if len(reports) >= MIN_SEEDS else '†'}")
        row.append(", ".join(pct(r["success_rate"]) for r in reports))
        print("| " + " | ".join(row) + " |")
    for a, b in args.compare:
        if a not in arms or b not in arms:
            sys.exit(f"--compare {a} {b}: unknown arm")
        few = "" if min(len(arms[a]), len(arms[b])) >= MIN_SEEDS else " †"
        mean, lo, hi = hierarchical_interval((1, successes(arms[a])), (-1, successes(arms[b])))
        verdict = "above 0" if lo > 0 else ("below 0" if hi < 0 else "contains 0")
        print(f"\n{a} - {b}: {100 * mean:+.1f} points, 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] ({verdict}){few}")
        for held in (False, True):
            keep = lambda _, h: h == held  # noqa: E731
            m, lo, hi = hierarchical_interval((1, successes(arms[a], keep)), (-1, successes(arms[b], keep)))
            print(f"  {'held-out' if held else 'seen'}: {100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")

if __name__ == "__main__":
    main()
