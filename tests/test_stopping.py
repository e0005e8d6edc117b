"""The adaptive budget: the flow's stopping rule (wgfinfer.stopping) and the ICNN step's plateau rule."""

from __future__ import annotations

import warnings

import pytest
import torch

import wgfinfer
from wgfinfer import checks, stopping
from wgfinfer.io import SAMPLER_FORMAT, read_save_file
from wgfinfer.io.files import write_save_file
from wgfinfer.schemes.base import VALIDATION_TOLERANCE, plateau_window, tail_length, validation_plateaued


def _history(values: list[float]) -> list[dict]:
    return [{"loss": v + 1.0, "kl_minus_log_z": v} for v in values]


def test_plateau_needs_patience_plus_one_steps() -> None:
    assert not stopping.has_plateaued(_history([1.0, 1.0]))
    assert stopping.has_plateaued(_history([1.0, 1.0, 1.0]))


def test_plateau_compares_the_best_of_the_last_steps_with_the_best_before() -> None:
    # falls by 0.05 a step: still improving
    assert not stopping.has_plateaued(_history([1.0, 0.95, 0.90, 0.85]))
    # the last two steps do not get below the best before them by more than the tolerance
    assert stopping.has_plateaued(_history([1.0, 0.5, 0.6, 0.495]))
    # a rise after the best counts as no improvement
    assert stopping.has_plateaued(_history([1.0, 0.5, 0.7, 0.8]))
    # an improvement just above the tolerance counts
    tol = stopping.TOLERANCE
    assert not stopping.has_plateaued(_history([1.0, 0.5, 0.5, 0.5 - 2 * tol]))


def test_failed_trainable_checks_make_the_rule_judge_the_steps_after_them() -> None:
    flat = _history([1.0, 0.5, 0.5, 0.5])
    assert stopping.stop_reason(flat, None, 20) == stopping.CONVERGED
    failed = [{"check": "moments", "ok": False}, {"check": "modes", "ok": True}]
    asked = [*flat[:-1], {**flat[-1], "checks": failed}]
    assert stopping.asks_for_training(asked[-1]) and stopping.judged_history(asked) == asked[-1:]
    assert stopping.stop_reason(asked, None, 20) is None  # at least PATIENCE more steps
    assert stopping.stop_reason([*asked, *_history([0.5])], None, 20) is None
    assert stopping.stop_reason([*asked, *_history([0.5, 0.5])], None, 20) == stopping.CONVERGED
    assert stopping.stop_reason([*asked, *_history([0.45, 0.4])], None, 20) is None  # still falling
    # a missed mode is no reason to train on; passed checks neither; a fixed n_steps is a fixed n_steps
    for records in ([{"check": "modes", "ok": False}], [{"check": "moments", "ok": True}]):
        other = [*flat[:-1], {**flat[-1], "checks": records}]
        assert not stopping.asks_for_training(other[-1])
        assert stopping.stop_reason(other, None, 20) == stopping.CONVERGED
    assert stopping.stop_reason(asked, 4, 20) == stopping.N_STEPS
    assert stopping.stop_reason(asked, None, 4) == stopping.MAX_STEPS


def test_check_gap_measures_failed_checks_in_units_of_their_bars() -> None:
    assert stopping.check_gap({}) == 0.0
    records = [
        {"check": "importance", "ok": True, "value": {"khat": 0.35}},
        {
            "check": "moments",
            "ok": False,
            "value": {"max_mean_error": -0.3, "sd_ratio_min": 0.95, "sd_ratio_max": 1.0},
        },
    ]
    assert stopping.check_gap({"checks": records}) == pytest.approx(3.0)  # the mean: 0.3 / 0.1
    records[1]["value"].update(max_mean_error=0.01, sd_ratio_min=1.0 / 1.21)  # two sd bars below
    assert stopping.check_gap({"checks": records}) == pytest.approx(2.0)
    records[0]["value"]["khat"] = 2.1  # three k-hat bars
    assert stopping.check_gap({"checks": records}) == pytest.approx(3.0)


@pytest.mark.parametrize(("errors", "rounds"), [((0.3, 0.3), 2), ((0.3, 0.1, 0.09), 3), ((0.3, 0.0), 2)])
def test_failed_checks_train_on_until_they_pass_or_stop_improving(
    monkeypatch: pytest.MonkeyPatch, errors: tuple[float, ...], rounds: int
) -> None:
    # the checks are replaced by records whose moments check fails with the given mean errors (a
    # mean error of 0 passes): the flow trains on after each failed round while the gap falls below
    # GAP_IMPROVEMENT times the previous one, and stops at a round that passes or does not improve
    import dataclasses

    calls: list[int] = []

    def fake_check_run(self, checkpoints):  # type: ignore[no-untyped-def]
        error = errors[len(calls)]
        value = {"max_mean_error": error, "sd_ratio_min": 1.0, "sd_ratio_max": 1.0}
        record = checks._record(
            "moments", error == 0.0, value, "fake", "" if error == 0.0 else "BiasedDrawsWarning"
        )
        calls.append(self.run_state.step)
        last = {**self.run_state.history[-1], "checks": [record]}
        self.run_state = dataclasses.replace(self.run_state, history=(*self.run_state.history[:-1], last))
        return [record]

    monkeypatch.setattr(wgfinfer.WGFSampler, "_check_run", fake_check_run)
    sampler = wgfinfer.WGFSampler(
        lambda x: -0.5 * (x - 2.0).square().sum(-1), dim=2,
        scheme=wgfinfer.ICNN(iters_per_step=10, hidden=(8,)), progress_bar=False, max_steps=30,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.run()
    assert len(calls) == rounds
    assert all(
        later - earlier >= stopping.PATIENCE for earlier, later in zip(calls[:-1], calls[1:], strict=True)
    )
    assert sampler.stop_reason == stopping.CONVERGED and len(sampler.history) < 30
    assert [sum("checks" in e for e in sampler.history)] == [rounds]
    warned = any(issubclass(w.category, checks.BiasedDrawsWarning) for w in caught)
    assert warned is (errors[rounds - 1] != 0.0)  # the warnings come from the last round only


def test_default_scheme_is_pwgf_coupling_for_models_and_icnn_for_log_densities() -> None:
    import pyro
    import pyro.distributions as dist

    from wgfinfer import sampler as sampler_module

    def two(y: torch.Tensor) -> None:
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.HalfNormal(1.0))
        pyro.sample("y", dist.Normal(a, b), obs=y)

    def one(y: torch.Tensor) -> None:
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(a, 1.0), obs=y)

    y = torch.randn(20, dtype=torch.float64)
    model_sampler = wgfinfer.WGFSampler(model=two, progress_bar=False)
    assert model_sampler.scheme == sampler_module.DEFAULT_SCHEME
    assert model_sampler.scheme.name == "pwgf" and model_sampler.scheme.map == "coupling"
    one_d = wgfinfer.WGFSampler(model=one, progress_bar=False, n_steps=1, check=False)
    one_d.run(y)  # a coupling layer needs two coordinates: the 1-D model takes the ICNN default
    assert one_d.scheme == sampler_module.DEFAULT_LOG_DENSITY_SCHEME
    callable_sampler = wgfinfer.WGFSampler(lambda x: -0.5 * x.square().sum(-1), dim=3, progress_bar=False)
    assert callable_sampler.scheme == sampler_module.DEFAULT_LOG_DENSITY_SCHEME
    # an explicit coupling scheme on a 1-D model is still refused
    with pytest.raises(ValueError, match="dim >= 2"):
        wgfinfer.WGFSampler(model=one, scheme=sampler_module.DEFAULT_SCHEME, progress_bar=False).run(y)


def test_plateau_watches_the_loss_when_a_step_has_no_density_estimate() -> None:
    history = [{"loss": v} for v in (3.0, 2.0, 1.0)]
    assert stopping.monitored_values(history) == [3.0, 2.0, 1.0]
    assert not stopping.has_plateaued(history)


def test_stop_reason_orders_the_caps() -> None:
    flat, falling = _history([1.0] * 3), _history([3.0, 2.0, 1.0])
    assert stopping.stop_reason(falling, n_steps=3, max_steps=20) == stopping.N_STEPS
    assert stopping.stop_reason(flat, n_steps=5, max_steps=20) is None  # a fixed count ignores plateaus
    assert stopping.stop_reason(flat, n_steps=None, max_steps=20) == stopping.CONVERGED
    assert stopping.stop_reason(falling, n_steps=None, max_steps=3) == stopping.MAX_STEPS
    assert stopping.stop_reason(falling, None, 20, training_time=2.0, time_budget=1.0) == stopping.TIME_BUDGET
    assert stopping.stop_reason(falling, None, 20, training_time=0.5, time_budget=1.0) is None


def _gaussian(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - 1.0) / 2.0).square().sum(-1)


SMALL = wgfinfer.ICNN(iters_per_step=40, batch_size=128, hidden=(16,))


def test_a_start_that_is_already_the_target_trains_no_step() -> None:
    # init="gaussian" fits N(1, 4 I) itself, so its whitened Student-t start has the target's mean and
    # covariance and importance weights with a light tail: no step is needed
    s = wgfinfer.WGFSampler(_gaussian, dim=2, init="gaussian", scheme=SMALL, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.run()
    assert s.stop_reason == stopping.START
    assert s.history == []
    assert s.attrs()["n_steps"] == 0 and s.attrs()["stop_reason"] == stopping.START
    records = {r["check"]: r for r in s.checks}
    assert records["importance"]["ok"] and records["moments"]["ok"] and records["modes"]["ok"]
    assert records["importance"]["value"]["khat"] < checks.START_KHAT
    x, log_q = s.sample(20_000, return_log_prob=True, seed=1)
    # N(1, 4 I): the mean's standard error is 2 / sqrt(20000) = 0.014, the variance's about
    # 4 sqrt(2 / 20000) = 0.04 (a Student-t(16) with that variance has a slightly larger one)
    assert (x.mean(0) - 1.0).abs().max() < 4 * 0.014
    assert (x.var(0) - 4.0).abs().max() < 4 * 0.05
    assert torch.allclose(log_q, s.flow.log_prob(x), atol=1e-4)
    s.run()  # nothing more to do
    assert s.history == [] and s.stop_reason == stopping.START


def test_a_flow_started_at_its_target_stops_after_the_fewest_steps() -> None:
    # without the checks there is no verdict on the start: the flow runs until its plateau, and no
    # step can improve on the fitted N(1, 4 I)
    s = wgfinfer.WGFSampler(_gaussian, dim=2, init="gaussian", scheme=SMALL, progress_bar=False, check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", stopping.BudgetWarning)
        s.run()
    assert s.stop_reason == stopping.CONVERGED
    assert len(s.history) == stopping.PATIENCE + 1
    assert s.attrs()["stop_reason"] == stopping.CONVERGED
    steps = len(s.history)
    s.run()  # converged: nothing more to do
    assert len(s.history) == steps


def test_a_cap_reached_while_improving_warns_and_run_continues() -> None:
    far = wgfinfer.Init("normal", scale=0.05)  # N(0, 0.05^2 I) against N(1, 4 I): far from the target
    s = wgfinfer.WGFSampler(_gaussian, dim=2, init=far, scheme=SMALL, max_steps=2, step_size=0.05,
                            progress_bar=False)  # fmt: skip
    with pytest.warns(stopping.BudgetWarning, match="max_steps=2"):
        s.run()
    assert s.stop_reason == stopping.MAX_STEPS and len(s.history) == 2
    s.max_steps = 3
    with pytest.warns(stopping.BudgetWarning):
        s.run()
    assert len(s.history) == 3


def test_a_time_budget_stops_after_the_step_that_spends_it() -> None:
    s = wgfinfer.WGFSampler(_gaussian, dim=2, scheme=SMALL, time_budget=1e-6, step_size=0.05,
                            init=wgfinfer.Init("normal", scale=0.05), progress_bar=False)  # fmt: skip
    with pytest.warns(stopping.BudgetWarning, match="time_budget"):
        s.run()
    assert s.stop_reason == stopping.TIME_BUDGET and len(s.history) == 1
    with pytest.warns(stopping.BudgetWarning):
        s.run()  # the budget is per call: one more step
    assert len(s.history) == 2


@pytest.mark.parametrize(("name", "value"), [("max_steps", 0), ("max_steps", 1.5), ("time_budget", -1.0)])
def test_invalid_budgets_are_refused(name: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        wgfinfer.WGFSampler(_gaussian, dim=2, **{name: value})


def test_save_files_keep_the_budget_and_old_files_load_with_defaults(tmp_path) -> None:
    s = wgfinfer.WGFSampler(_gaussian, dim=2, scheme=SMALL, n_steps=1, max_steps=7, time_budget=30.0,
                            progress_bar=False).run()  # fmt: skip
    path = tmp_path / "s.pt"
    s.save(path)
    loaded = wgfinfer.WGFSampler.load(path, log_density=_gaussian)
    assert (loaded.n_steps, loaded.max_steps, loaded.time_budget) == (1, 7, 30.0)
    # a file written before the budget options existed
    content = read_save_file(path, SAMPLER_FORMAT)
    for key in ("max_steps", "time_budget"):
        del content["options"][key]
    write_save_file(content, tmp_path / "old.pt")
    old = wgfinfer.WGFSampler.load(tmp_path / "old.pt", log_density=_gaussian)
    assert (old.n_steps, old.max_steps, old.time_budget) == (1, stopping.DEFAULT_MAX_STEPS, None)


# ------------------------------------------------------------------------- inner plateau rule
def test_validation_plateau_rule() -> None:
    tol = VALIDATION_TOLERANCE
    assert not validation_plateaued([1.0])  # from the second window on
    assert validation_plateaued([1.0, 1.0])
    assert validation_plateaued([1.0, 1.0 - tol])
    assert not validation_plateaued([1.0, 1.0 - 2 * tol])
    assert validation_plateaued([1.0, 1.5])  # a rise


def test_window_and_tail_lengths() -> None:
    assert plateau_window(200) == 20 and plateau_window(40) == 10
    assert tail_length(200, 200) == 20  # a full fit: its last 10%
    assert tail_length(80, 200) == 20  # an early stop: the last (annealed) window


def test_an_icnn_step_at_its_target_stops_early_and_the_option_turns_it_off() -> None:
    for stop in (True, False):
        scheme = wgfinfer.ICNN(iters_per_step=200, batch_size=128, hidden=(16,), stop_on_plateau=stop)
        s = wgfinfer.WGFSampler(
            _gaussian, dim=2, init="gaussian", n_steps=1, progress_bar=False, scheme=scheme
        )
        s.run()
        iterations = s.history[0]["iterations"]
        if stop:
            # the plateau shows at a window's end, then one annealed window follows
            assert iterations < 200 and iterations % 20 == 0
        else:
            assert iterations == 200


def test_recent_improvement_is_what_the_plateau_rule_compares() -> None:
    assert stopping.recent_improvement(_history([1.0, 0.5])) == float("inf")  # too few steps
    assert stopping.recent_improvement(_history([1.0, 0.5, 0.6, 0.45])) == pytest.approx(0.05)
    assert stopping.recent_improvement(_history([1.0, 0.5, 0.7, 0.8])) == pytest.approx(-0.2)


def test_a_start_that_needed_no_step_saves_and_loads(tmp_path) -> None:
    s = wgfinfer.WGFSampler(_gaussian, dim=2, init="gaussian", scheme=SMALL, progress_bar=False).run()
    assert s.stop_reason == stopping.START
    s.save(tmp_path / "s.pt")
    loaded = wgfinfer.WGFSampler.load(tmp_path / "s.pt", log_density=_gaussian)
    assert loaded.history == [] and loaded.checks == s.checks
    assert torch.equal(loaded.sample(64, seed=3), s.sample(64, seed=3))
    loaded.run()  # the verdict is kept: nothing is trained
    assert loaded.history == [] and loaded.stop_reason == stopping.START


def _skewed(x: torch.Tensor) -> torch.Tensor:
    # a Gamma(2, 1) in its log coordinate, u = log y: log p(u) = 2u - exp(u), skewed to the left
    return (2.0 * x[:, 0] - x[:, 0].exp()) - 0.5 * x[:, 1].square()


def test_a_start_away_from_the_target_is_refused_and_the_flow_trains() -> None:
    # the Laplace approximation at the mode of a skewed marginal has the wrong mean (about 0.3 sd):
    # the verdict refuses it, and the steps run as before
    s = wgfinfer.WGFSampler(_skewed, dim=2, init="laplace", scheme=SMALL, max_steps=3, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.run()
    assert s.stop_reason != stopping.START and len(s.history) >= 1
