"""Contract tests: every scheme x map through the same protocol, every map family through the same
density checks (in the manner of zuko's flow tests).

A new scheme or map kind gets one row in ``SCHEMES`` or ``MAPS`` below.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.distributions import Independent, Normal

import wgfinfer
from wgfinfer.functionals import Entropy, InteractionEnergy, KLDivergence, PotentialEnergy
from wgfinfer.nn import AffineCouplingFlow, AffineMap, DenseICNN, PlanarFlow, ResidualMap, ResidualPushforward
from wgfinfer.run import RunState, run_steps
from wgfinfer.schemes import Info

DIM = 3
SMALL_ICNN = {"iters_per_step": 4, "batch_size": 32, "n_particles": 96, "n_monitor": 64, "hidden": (8,)}
SMALL_VARIATIONAL = {**SMALL_ICNN, "dual_hidden": (8,)}
SMALL_PWGF = {"n_samples": 64, "n_monitor": 48, "hidden": (8,), "max_iter": 20}

SCHEMES = {
    "icnn": wgfinfer.ICNN(**SMALL_ICNN),
    "variational-resnet": wgfinfer.Variational(map="resnet", **SMALL_VARIATIONAL),
    "variational-icnn": wgfinfer.Variational(map="icnn", **SMALL_VARIATIONAL),
    "variational-linear": wgfinfer.Variational(map="linear", **SMALL_VARIATIONAL),
    "pwgf-planar": wgfinfer.PWGF(map="planar", n_layers=3, **SMALL_PWGF),
    "pwgf-affine": wgfinfer.PWGF(map="affine", **SMALL_PWGF),
    "pwgf-resnet": wgfinfer.PWGF(map="resnet", **SMALL_PWGF),
    "pwgf-coupling": wgfinfer.PWGF(map="coupling", n_layers=2, **SMALL_PWGF),
    "forward_backward-variational": wgfinfer.ForwardBackward(
        backward=wgfinfer.Variational(**SMALL_VARIATIONAL), n_reference=50
    ),
    "forward_backward-icnn": wgfinfer.ForwardBackward(backward=wgfinfer.ICNN(**SMALL_ICNN), n_reference=50),
}
SAMPLER_SCHEMES = [k for k in SCHEMES if not k.startswith("forward_backward")]
COMMON_INFO = ("loss", "iterations", "wall_time")


def log_density(x):
    return -0.5 * ((x - 0.5) / 1.5).square().sum(-1)


def base(dtype=torch.float64):
    return Independent(Normal(torch.zeros(DIM, dtype=dtype), torch.ones(DIM, dtype=dtype)), 1)


def functional_for(name):
    if name.startswith("forward_backward"):
        return InteractionEnergy(lambda z: 0.5 * z.square().sum(-1)) + KLDivergence(log_density)
    return KLDivergence(log_density)


def run_two(name, seed=0):
    scheme, functional = SCHEMES[name], functional_for(name)
    generator = torch.Generator().manual_seed(seed)
    s0 = scheme.init(base(), generator, functional=functional)
    s1, info1 = scheme.step(s0, functional, 0.2, generator, monitor=functional)
    s2, info2 = scheme.step(s1, functional, 0.2, generator, monitor=functional)
    return s0, s1, s2, info1, info2


@pytest.mark.parametrize("name", list(SCHEMES))
def test_init_and_step_shapes_finiteness_and_immutability(name):
    s0, s1, s2, info1, info2 = run_two(name)
    assert s0.step == 0 and s1.step == 1 and s2.step == 2
    assert len(s0.maps) == 0 and len(s1.maps) == 1 and len(s2.maps) == 2
    assert s1.maps[0] is not s2.maps[1]
    before = s0.particles.clone()
    for state in (s0, s1, s2):
        assert state.particles.ndim == 2 and state.particles.shape[1] == DIM
        assert bool(torch.isfinite(state.particles).all())
    assert torch.equal(s0.particles, before), "a step changed the state it was given"
    for info in (info1, info2):
        assert isinstance(info, Info)
        for field in COMMON_INFO:
            assert getattr(info, field) is not None
        assert info.iterations >= 1 and info.wall_time >= 0
        if not name.startswith("forward_backward"):
            assert torch.isfinite(torch.tensor(info.loss))
        record = info.record()
        assert set(record) <= {f.name for f in dataclasses.fields(Info)}
    # the same field names for the same quantities: the JKO schemes' transport distance, PWGF's solver
    if name.startswith("pwgf"):
        assert info2.solver_iterations is not None and info2.residual is not None and info2.w2 is None
    else:
        assert info2.w2 is not None and info2.potential is not None and info2.solver_iterations is None


@pytest.mark.parametrize("name", list(SCHEMES))
def test_steps_are_deterministic_given_the_generator(name):
    a, b = run_two(name, seed=3), run_two(name, seed=3)
    assert torch.equal(a[2].particles, b[2].particles)
    assert a[4].loss == b[4].loss or (a[4].loss != a[4].loss and b[4].loss != b[4].loss)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_gradients_reach_every_trainable_parameter(name):
    _, s1, _, _, _ = run_two(name)
    module = s1.maps[0]
    if hasattr(module, "backward_map"):
        module = module.backward_map
    params = [p for p in module.parameters()]
    assert params, "the map has no parameters"
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    x = torch.randn(16, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if hasattr(module, "map_and_log_det"):
        y, log_det = module.map_and_log_det(x)
        out = y.square().sum() + log_det.sum()
    else:
        out = module.transport(x).square().sum()
    out.backward()
    missing = [
        n for n, p in module.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())
    ]
    assert missing == [], f"no finite gradient reaches {missing}"


@pytest.mark.parametrize("name", list(SCHEMES))
def test_a_retry_scale_shrinks_the_step(name):
    scheme = SCHEMES[name]
    scaled = scheme.scaled(0.25)
    assert scheme.scaled(1.0) is scheme
    inner = scaled.backward if name.startswith("forward_backward") else scaled
    original = scheme.backward if name.startswith("forward_backward") else scheme
    if name.startswith("pwgf"):
        assert inner.substeps == 4 * original.substeps
    else:
        assert inner.lr == pytest.approx(0.25 * original.lr)


def test_the_loop_records_every_step_and_keeps_the_old_state_on_failure():
    scheme = SCHEMES["icnn"]
    generator = torch.Generator().manual_seed(0)
    state = RunState(scheme.init(base(), generator))
    seen = []
    out = run_steps(scheme, state, log_density, 0.5, 3, generator, on_step=seen.append, max_retries=0)
    assert [e["step"] for e in out.history] == [1, 2, 3] and len(seen) == 3 and out.step == 3
    assert [e["time"] for e in out.history] == pytest.approx([0.5, 1.0, 1.5])

    calls = {"n": 0}

    def breaks_on_second_step(x):
        calls["n"] += 1
        if calls["n"] > 4:
            raise RuntimeError("user code failed")
        return log_density(x)

    before = generator.get_state()
    kept = []
    with pytest.raises(RuntimeError, match="user code failed"):
        run_steps(scheme, out, breaks_on_second_step, 0.5, 2, generator, on_step=kept.append)
    assert len(kept) == 1 and kept[0].step == 4  # the failed step is not kept
    assert out.step == 3 and len(out.history) == 3  # states are never modified
    assert not torch.equal(before, generator.get_state())  # advanced by the completed step only


def test_a_stopping_rule_ends_the_run():
    scheme = SCHEMES["icnn"]
    generator = torch.Generator().manual_seed(0)
    state = RunState(scheme.init(base(), generator))
    out = run_steps(scheme, state, log_density, 0.5, 5, generator, should_stop=lambda s, info: s.step >= 2)
    assert out.step == 2


@pytest.mark.parametrize("name", SAMPLER_SCHEMES)
def test_save_load_round_trip_and_continued_run_are_bit_identical(name, tmp_path):
    scheme = SCHEMES[name]
    kwargs = dict(dim=DIM, scheme=scheme, n_steps=2, step_size=0.2, dtype=torch.float64, progress_bar=False)
    sampler = wgfinfer.WGFSampler(log_density, **kwargs).run()
    sampler.save(tmp_path / "s.pt")
    loaded = wgfinfer.WGFSampler.load(tmp_path / "s.pt", log_density=log_density)
    assert loaded.scheme == scheme
    assert torch.equal(sampler.sample(50, seed=4), loaded.sample(50, seed=4))
    assert torch.equal(sampler.generator.get_state(), loaded.generator.get_state())
    assert loaded.history == sampler.history
    # training on after loading = training on without saving
    for s in (sampler, loaded):
        s.n_steps = 3
        s.run()
    assert torch.equal(sampler.sample(50, seed=5), loaded.sample(50, seed=5))


# ------------------------------------------------------------------------------ map families
def _perturbed(module, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=generator))
    return module


def _gen():
    return torch.Generator().manual_seed(0)


MAPS = {
    "icnn": lambda: DenseICNN(DIM, hidden=(8, 8), generator=_gen(), dtype=torch.float64),
    "planar": lambda: PlanarFlow(DIM, 4, generator=_gen(), dtype=torch.float64),
    "affine": lambda: AffineMap(DIM, generator=_gen(), dtype=torch.float64),
    "coupling": lambda: AffineCouplingFlow(DIM, 2, (8,), generator=_gen(), dtype=torch.float64),
    "residual_pushforward": lambda: ResidualPushforward(DIM, (8,), generator=_gen(), dtype=torch.float64),
}
INVERTIBLE = ["icnn", "planar", "affine", "coupling"]


@pytest.mark.parametrize("kind", list(MAPS))
def test_log_det_matches_autograd_slogdet(kind):
    module = _perturbed(MAPS[kind]())
    x = torch.randn(6, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, log_det = module.map_and_log_det(x)
    assert torch.allclose(y, module.transport(x), atol=1e-10)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: module.transport(v.unsqueeze(0))[0], x[i])
        sign, logabs = torch.linalg.slogdet(jac)
        assert float(sign) > 0
        assert float(logabs) == pytest.approx(float(log_det[i].detach()), abs=1e-8)


@pytest.mark.parametrize("kind", INVERTIBLE)
def test_inverse_round_trip(kind):
    module = _perturbed(MAPS[kind]())
    x = torch.randn(20, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y, log_det = module.map_and_log_det(x)
    x_back, log_det_back, converged = module.inverse_and_log_det(y, tol=1e-12, max_iter=200)
    assert bool(converged.all())
    assert torch.allclose(x_back, x, atol=1e-8)
    assert torch.allclose(log_det_back, log_det, atol=1e-8)


def test_draws_only_maps_say_so():
    flow = wgfinfer.Flow(base(), [ResidualMap(DIM, hidden=(8,), generator=_gen(), dtype=torch.float64)])
    assert not flow.has_density
    with pytest.raises(wgfinfer.DensityNotAvailableError):
        flow.sample(4, torch.Generator().manual_seed(0), return_log_prob=True)


def test_every_free_energy_term_kind_is_in_a_contract_row():
    # the rows above exercise potential, entropy and interaction terms
    kinds = {type(t) for name in SCHEMES for t in functional_for(name).terms()}
    assert {PotentialEnergy, Entropy, InteractionEnergy} <= kinds
