"""Noise-aware front and recommendation: differences smaller than the noise do not count."""

from __future__ import annotations

import random

import pytest

from peftsearch.results import front_of, recommend
from peftsearch.results.noise import Tolerances, accuracy_error, dominates
from peftsearch.results.recommend import Constraints


def row(trial: int, accuracy: float, size: int, seconds: float, **extra: object) -> dict:
    base = {
        "trial": trial,
        "method": "lora",
        "params": "rank=8 targets=qv layers=all",
        "lr": 1e-3,
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "trainable_params": size,
        "trainable_pct": size / 1e5,
        "cost_usd": seconds / 3600,
        "device_seconds": seconds,
        "estimated_seconds": seconds / 1.12,  # off by 12%, as the demo's cost model was
        "status": "COMPLETE",
        "eval_rows": 400,
        "description": "",
    }
    return {**base, **extra}


def test_standard_error_from_eval_rows() -> None:
    assert accuracy_error(row(0, 0.8, 1, 1)) == pytest.approx(0.02)
    assert accuracy_error(row(0, 0.8, 1, 1, eval_rows=None)) is None
    assert Tolerances.from_rows([row(0, 0.8, 1, 30)]).cost == pytest.approx(0.12)


def test_a_trial_beaten_by_4_points_at_equal_size_leaves_the_front() -> None:
    """The demo's trials 2 and 3: 4 points apart at equal size, 3 s apart in time."""
    better, faster = row(2, 0.80, 80_000, 30.0), row(3, 0.76, 80_000, 27.0)
    assert front_of([better, faster]) == [2]
    # Without eval sizes nothing is known about noise: the strict front keeps both.
    strict = [{**r, "eval_rows": None, "estimated_seconds": None} for r in (better, faster)]
    assert Tolerances.from_rows(strict).cost == 0.05
    assert front_of(strict) == [2, 3]


def test_recommend_prefers_the_smaller_of_a_tie() -> None:
    """DoRA 0.792 with 79k params against IA3 0.782 with 5k: one point is noise at n=400."""
    dora = row(2, 0.792, 79_000, 40.0, method="dora")
    ia3 = row(1, 0.782, 5_000, 38.0, method="ia3", params="targets=kv layers=all")
    rows = [dora, ia3]
    advice = recommend(rows, front_of(rows), Constraints())
    assert advice.trial == 1
    assert "a gap within the evaluation noise (±2.9 points)" in advice.text
    assert "accuracy 0.782 ± 0.021" in advice.text


def test_ties_on_the_front_are_named() -> None:
    small = row(0, 0.80, 5_000, 60.0)
    cheap = row(1, 0.81, 50_000, 20.0)
    rows = [small, cheap]
    front = front_of(rows)
    assert front == [0, 1]  # neither is nowhere-worse: one is smaller, the other cheaper
    advice = recommend(rows, front, Constraints())
    assert advice.trial == 0 and advice.tied == [1]
    assert "Trial(s) 1 are tied with it within the evaluation noise" in advice.text
    assert recommend(rows, front, Constraints(prefer="cost")).trial == 1


def test_a_trial_beaten_only_by_trials_off_the_front_stays_on_it() -> None:
    """The LLM demo on 48 eval prompts: trial 3 (fewest params) beats trials 0 and 1
    within the noise, trial 0 beats trial 4 so, yet trial 4 is clearly more accurate
    than trial 3 and nothing on the front beats it: it is on the front."""
    rows = [
        row(0, 0.542, 11_520, 5.4, eval_rows=48, estimated_seconds=None),
        row(1, 0.521, 11_520, 5.0, eval_rows=48, estimated_seconds=None),
        row(2, 0.521, 562_080, 3.6, eval_rows=48, estimated_seconds=None),
        row(3, 0.458, 4_608, 5.8, eval_rows=48, estimated_seconds=None),
        row(4, 0.604, 57_600, 5.0, eval_rows=48, estimated_seconds=None),
    ]
    tolerances = Tolerances(cost=0.25)
    assert dominates(rows[0], rows[4], tolerances)
    assert dominates(rows[3], rows[0], tolerances)
    assert not dominates(rows[3], rows[4], tolerances)
    with_timing_noise = [{**r, "estimated_seconds": r["device_seconds"] * 0.75} for r in rows]
    assert front_of(with_timing_noise) == [2, 3, 4]


def test_the_noise_front_is_never_empty_and_has_no_cycles() -> None:
    rng = random.Random(0)
    for _ in range(200):
        rows = [
            row(
                i,
                rng.uniform(0.5, 0.9),
                rng.choice([1_000, 5_000, 20_000, 80_000]),
                rng.uniform(10, 60),
                eval_rows=rng.choice([50, 200, 400]),
            )
            for i in range(rng.randint(1, 12))
        ]
        tolerances = Tolerances.from_rows(rows)
        for a in rows:
            for b in rows:
                assert not (dominates(a, b, tolerances) and dominates(b, a, tolerances))
        front = front_of(rows)
        assert front
        on = [r for r in rows if r["trial"] in front]
        for r in rows:  # off the front only when a front member beats it
            beaten = any(dominates(o, r, tolerances) for o in on)
            assert (r["trial"] not in front) == beaten
        assert not any(dominates(a, b, tolerances) for a in on for b in on)


BASELINE = {
    "base_model": {"method": "no adapter: the base model", "accuracy": 0.70, "eval_rows": 400},
    "majority_class": {"method": "no adapter: always 'pos'", "accuracy": 0.52, "eval_rows": 400},
}


def test_a_trial_that_does_not_beat_the_baseline_is_off_the_front_and_not_recommended() -> None:
    """Prompt tuning at 0.50 with 8k params is on the strict front (the smallest); the
    model with no adapter scores 0.70, so it never is. 0.72 is within the noise of 0.70
    (one standard error of the difference is 3.2 points): off too."""
    from peftsearch.results.front import verdict

    rows = [
        row(0, 0.50, 8_000, 20.0, method="prompt_tuning"),
        row(1, 0.72, 20_000, 20.0),
        row(2, 0.85, 80_000, 30.0, method="dora"),
    ]
    assert front_of(rows) == [0, 1, 2]
    judged = verdict(rows, baseline=BASELINE)
    assert judged.front == [2] and judged.beaten == {0, 1}
    assert judged.bound == BASELINE["base_model"]  # the best of the no-adapter scores
    advice = recommend(rows, [0, 1, 2], Constraints(prefer="params"), baseline=BASELINE)
    assert advice.trial == 2  # the caller's front is bounded again


def test_when_nothing_beats_the_baseline_recommend_says_so() -> None:
    rows = [row(0, 0.50, 8_000, 20.0), row(1, 0.71, 20_000, 20.0)]
    assert front_of(rows, baseline=BASELINE) == []
    advice = recommend(rows, [], Constraints(), baseline=BASELINE)
    assert not advice.met and advice.trial is None
    assert advice.text.startswith("No trial beats the model with no adapter")
    assert "accuracy 0.700" in advice.text and "trial, 1" in advice.text


def test_the_cost_tolerance_is_the_studys_timing_noise() -> None:
    """Five LoRA trials of identical shape took 12.1 to 14.1 device-seconds (held-out
    data): a trial at 0.277 must not stay on the front beside one at 0.56 of the same
    size because it ran 6% faster."""
    same = [
        row(n, 0.56 if n == 0 else 0.40, 5_000, s, estimated_seconds=None, steps=60)
        for n, s in enumerate((13.0, 12.1, 14.1, 13.4, 12.6))
    ]
    tolerance = Tolerances.from_rows(same).cost
    assert 0.08 < tolerance < 0.12  # one sd of the relative difference of two runs
    slow, fast = same[0], row(9, 0.277, 5_000, 13.0 / 1.06, estimated_seconds=None, steps=60)
    rows = [*same, fast]
    assert 9 not in front_of(rows)
    # with nothing repeated and no estimates, the trials' own step-time jitter sets it
    lone = [row(0, 0.8, 1, 30, estimated_seconds=None, step_jitter=0.09)]
    assert Tolerances.from_rows(lone).cost == pytest.approx(0.09)
    assert slow["trial"] in front_of(rows)


def test_the_most_accurate_trial_is_explained() -> None:
    from peftsearch.results.front import best_trial_line

    dora = row(17, 0.797, 79_000, 40.0, method="dora")
    lora = row(10, 0.790, 9_000, 40.0)
    line = best_trial_line([dora, lora])
    assert line == (
        "Most accurate trial: 17 (accuracy 0.797); not on the front: tied with trial 10 "
        "within noise; trial 10 is smaller."
    )
    assert best_trial_line([dora]) == "Most accurate trial: 17 (accuracy 0.797), on the front."
    assert "does not beat the model with no adapter (0.900)" in str(
        best_trial_line([dora, lora], baseline={"b": {"accuracy": 0.9, "eval_rows": 400}})
    )


def test_forgetting_ties_within_its_measured_error() -> None:
    from peftsearch.search.objectives import objectives_of

    names = objectives_of(("accuracy", "trainable_params", "forgetting"))
    a = row(0, 0.80, 5_000, 20.0, forgetting=0.10, forgetting_se=0.03)
    b = row(1, 0.80, 5_000, 20.0, forgetting=0.14, forgetting_se=0.03)
    c = row(2, 0.80, 5_000, 20.0, forgetting=0.30, forgetting_se=0.03)
    assert front_of([a, b, c], names) == [0, 1]  # 0.04 apart is within 0.042; 0.20 is not


def test_of_tied_trials_of_equal_size_the_confirmed_one_is_recommended() -> None:
    """0.801 over two seeds and 0.797 on one, the same size, the unconfirmed one 3%
    cheaper: the cost gap is timing noise, the second seed is evidence."""
    confirmed = row(7, 0.801, 6_918, 40.0, seeds=2, accuracy_sd=0.017)
    single = row(12, 0.797, 6_918, 38.8)
    advice = recommend([confirmed, single], [7, 12], Constraints())
    assert advice.trial == 7 and advice.tied == [12]
