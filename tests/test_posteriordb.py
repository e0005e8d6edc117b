"""The Pyro translations of posteriordb posteriors (wgfinfer/problems/posteriordb.py).

Fast checks (always run): every model runs with the registry's latent sites and shapes, its log
joint is finite at the reference point, wgfinfer can batch it, its supports are the registry's, and
its log density matches a literal scipy transcription of the Stan program (loops, 1-based indexing
turned 0-based) up to a constant; the forward algorithm and the ARMA recursion match plain loops; the
loaders and the reference script work on a synthetic posteriordb directory.

Slow check (``--runslow``): a seeded Pyro NUTS run of each translation agrees with posteriordb's
reference draws within Monte-Carlo error on the unconstrained scale (means and sds, ESS-based
standard errors on both sides).  Set ``POSTERIORDB`` to a posteriordb directory to also compare the
packaged data and moments with it (default ``../shared/posteriordb`` beside the repository, when present).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value
from pyro.poutine.util import site_is_subsample
from scipy import stats
from scipy.special import logsumexp
from torch.distributions import biject_to

from wgfinfer.problems import eight_schools
from wgfinfer.problems import posteriordb as pdb
from wgfinfer.pyro_target import PyroTarget

NAMES = sorted(pdb.POSTERIORS)
REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("POSTERIORDB", REPO.parent / "shared" / "posteriordb"))
needs_root = pytest.mark.skipif(not (ROOT / "reference_draws").is_dir(), reason=f"no posteriordb at {ROOT}")


def _latent_sites(trace) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def _log_joint(model, args, values) -> float:
    """Log joint on the constrained scale (no Jacobian), priors and likelihood with constants."""
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args)
    return float(trace.log_prob_sum())


def _shifted_point(name: str, sign: float = 1.0) -> dict[str, torch.Tensor]:
    """Reference mean + 0.5 sd (alternating signs) on the unconstrained scale, constrained."""
    moments = pdb.reference_moments(name)
    point = {}
    for param in pdb.get(name).params:
        m = moments[param.name]
        alternating = np.resize([1.0, -1.0], m["mean"].size).reshape(m["mean"].shape)
        free = m["mean"] + sign * 0.5 * m["sd"] * alternating
        point[param.name] = param.transform(torch.as_tensor(free, dtype=torch.float64))
    return point


# ------------------------------------------------------------- Stan programs, transcribed literally
def _normal_regression(y, mu, sigma):
    return stats.norm.logpdf(y, mu, sigma).sum()


def _stan_kidscore_interaction(d, p):
    beta, sigma = p["beta"], p["sigma"]
    mom_hs, mom_iq = np.asarray(d["mom_hs"], float), np.asarray(d["mom_iq"], float)
    inter = mom_hs * mom_iq
    mu = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * inter
    return stats.cauchy.logpdf(sigma, 0, 2.5) + _normal_regression(np.asarray(d["kid_score"]), mu, sigma)


def _stan_kidscore_mom_work(d, p):
    beta, sigma = p["beta"], p["sigma"]
    work = np.asarray(d["mom_work"])
    mu = beta[0] + beta[1] * (work == 2) + beta[2] * (work == 3) + beta[3] * (work == 4)
    return _normal_regression(np.asarray(d["kid_score"]), mu, sigma)


def _stan_logmesquite(d, p):
    beta, sigma = p["beta"], p["sigma"]
    L = {k: np.log(np.asarray(d[k], float)) for k in ("weight", "diam1", "diam2", "canopy_height")}
    L.update({k: np.log(np.asarray(d[k], float)) for k in ("total_height", "density")})
    mu = (
        beta[0]
        + beta[1] * L["diam1"]
        + beta[2] * L["diam2"]
        + beta[3] * L["canopy_height"]
        + beta[4] * L["total_height"]
        + beta[5] * L["density"]
        + beta[6] * np.asarray(d["group"], float)
    )
    return _normal_regression(L["weight"], mu, sigma)


def _stan_nes(d, p):
    beta, sigma = p["beta"], p["sigma"]
    v = {
        k: np.asarray(d[k], float) for k in ("partyid7", "real_ideo", "race_adj", "educ1", "gender", "income")
    }
    age = np.asarray(d["age_discrete"])
    mu = (
        beta[0]
        + beta[1] * v["real_ideo"]
        + beta[2] * v["race_adj"]
        + beta[3] * (age == 2)
        + beta[4] * (age == 3)
        + beta[5] * (age == 4)
        + beta[6] * v["educ1"]
        + beta[7] * v["gender"]
        + beta[8] * v["income"]
    )
    return _normal_regression(v["partyid7"], mu, sigma)


def _stan_earn_height(d, p):
    beta, sigma = p["beta"], p["sigma"]
    return _normal_regression(
        np.asarray(d["earn"], float), beta[0] + beta[1] * np.asarray(d["height"]), sigma
    )


def _stan_logearn_height_male(d, p):
    beta, sigma = p["beta"], p["sigma"]
    mu = beta[0] + beta[1] * np.asarray(d["height"], float) + beta[2] * np.asarray(d["male"], float)
    return _normal_regression(np.log(np.asarray(d["earn"], float)), mu, sigma)


def _stan_blr(d, p):
    beta, sigma = p["beta"], p["sigma"]
    X, y = np.asarray(d["X"], float), np.asarray(d["y"], float)
    prior = stats.norm.logpdf(beta, 0, 10).sum() + stats.norm.logpdf(sigma, 0, 10)
    return prior + _normal_regression(y, X @ beta, sigma)


def _stan_diamonds(d, p):
    X, Y = np.asarray(d["X"], float), np.asarray(d["Y"], float)
    K = int(d["K"])
    means_X = np.array([X[:, i].mean() for i in range(1, K)])
    Xc = np.column_stack([X[:, i] - means_X[i - 1] for i in range(1, K)])
    b, intercept, sigma = p["b"], p["Intercept"], p["sigma"]
    target = stats.norm.logpdf(b, 0, 1).sum() + stats.t.logpdf(intercept, 3, 8, 10)
    target += stats.t.logpdf(sigma, 3, 0, 10) - stats.t.logsf(0, 3, 0, 10)
    return target + _normal_regression(Y, intercept + Xc @ b, sigma)


def _stan_arma11(d, p):
    y, T = np.asarray(d["y"], float), int(d["T"])
    mu, phi, theta, sigma = (float(p[k]) for k in ("mu", "phi", "theta", "sigma"))
    nu, err = np.empty(T), np.empty(T)
    nu[0] = mu + phi * mu
    err[0] = y[0] - nu[0]
    for t in range(1, T):
        nu[t] = mu + phi * y[t - 1] + theta * err[t - 1]
        err[t] = y[t] - nu[t]
    target = stats.norm.logpdf(mu, 0, 10) + stats.norm.logpdf(phi, 0, 2) + stats.norm.logpdf(theta, 0, 2)
    return target + stats.cauchy.logpdf(sigma, 0, 2.5) + stats.norm.logpdf(err, 0, sigma).sum()


def _stan_kilpisjarvi(d, p):
    alpha, beta, sigma = (float(p[k]) for k in ("alpha", "beta", "sigma"))
    target = stats.norm.logpdf(alpha, d["pmualpha"], d["psalpha"]) + stats.norm.logpdf(
        beta, d["pmubeta"], d["psbeta"]
    )
    return target + _normal_regression(
        np.asarray(d["y"], float), alpha + beta * np.asarray(d["x"], float), sigma
    )


def _stan_gp_regr(d, p):
    rho, alpha, sigma = (float(p[k]) for k in ("rho", "alpha", "sigma"))
    x, y, N = np.asarray(d["x"], float), np.asarray(d["y"], float), int(d["N"])
    cov = np.empty((N, N))
    for i in range(N):
        for j in range(N):
            cov[i, j] = alpha**2 * np.exp(-((x[i] - x[j]) ** 2) / (2 * rho**2))
    cov += np.diag(np.full(N, sigma))
    target = (
        stats.gamma.logpdf(rho, 25, scale=1 / 4)
        + stats.norm.logpdf(alpha, 0, 2)
        + stats.norm.logpdf(sigma, 0, 1)
    )
    return target + stats.multivariate_normal.logpdf(y, np.zeros(N), cov)


def _forward(log_emission, theta, N, K):
    gamma = np.empty((N, K))
    for k in range(K):
        gamma[0, k] = log_emission(0, k)
    for t in range(1, N):
        for k in range(K):
            acc = [gamma[t - 1, j] + np.log(theta[j][k]) + log_emission(t, k) for j in range(K)]
            gamma[t, k] = logsumexp(acc)
    return logsumexp(gamma[N - 1])


def _stan_hmm_example(d, p):
    y, N, K = np.asarray(d["y"], float), int(d["N"]), int(d["K"])
    mu, theta = p["mu"], [p["theta1"], p["theta2"]]
    target = stats.norm.logpdf(mu[0], 3, 1) + stats.norm.logpdf(mu[1], 10, 1)
    return target + _forward(lambda t, k: stats.norm.logpdf(y[t], mu[k], 1), theta, N, K)


def _stan_hmm_drive_0(d, p):
    u, v, N, K = np.asarray(d["u"], float), np.asarray(d["v"], float), int(d["N"]), int(d["K"])
    alpha = np.asarray(d["alpha"], float)
    theta, phi, lam = [p["theta1"], p["theta2"]], p["phi"], p["lambda"]
    target = sum(stats.dirichlet.logpdf(theta[k], alpha[k, :]) for k in range(K))
    target += stats.norm.logpdf(phi[0], 0, 1) + stats.norm.logpdf(phi[1], 3, 1)
    target += stats.norm.logpdf(lam[0], 0, 1) + stats.norm.logpdf(lam[1], 3, 1)

    def emission(t, k):
        return stats.expon.logpdf(u[t], scale=1 / phi[k]) + stats.expon.logpdf(v[t], scale=1 / lam[k])

    return target + _forward(emission, theta, N, K)


STAN_TARGETS = {
    "diamonds-diamonds": _stan_diamonds,
    "kidiq-kidscore_interaction": _stan_kidscore_interaction,
    "kidiq_with_mom_work-kidscore_mom_work": _stan_kidscore_mom_work,
    "mesquite-logmesquite": _stan_logmesquite,
    "nes1996-nes": _stan_nes,
    "earnings-earn_height": _stan_earn_height,
    "earnings-logearn_height_male": _stan_logearn_height_male,
    "sblri-blr": _stan_blr,
    "arma-arma11": _stan_arma11,
    "kilpisjarvi_mod-kilpisjarvi": _stan_kilpisjarvi,
    "gp_pois_regr-gp_regr": _stan_gp_regr,
    "hmm_example-hmm_example": _stan_hmm_example,
    "bball_drive_event_0-hmm_drive_0": _stan_hmm_drive_0,
}


# ------------------------------------------------------------------------------- fast tests
def test_registry_matches_definitions():
    assert sorted(STAN_TARGETS) == NAMES
    for name in NAMES:
        post, definition = pdb.get(name), pdb.load_definition(name)
        assert (post.model_name, post.data_name) == (definition["model_name"], definition["data_name"])
        assert {p.name: int(np.prod(p.shape)) for p in post.params} == definition["dimensions"]
        assert (pdb.packaged_root() / "models" / f"{post.model_name}.stan").is_file()
    with pytest.raises(KeyError, match="known"):
        pdb.get("eight_schools-nope")


@pytest.mark.parametrize("name", NAMES)
def test_model_sites_and_log_joint(name):
    post, args = pdb.get(name), pdb.model_args(name)
    assert all(a.dtype == torch.float64 for a in args)
    trace = poutine.trace(post.model).get_trace(*args)
    assert _latent_sites(trace) == {p.name: p.shape for p in post.params}
    assert list(_latent_sites(trace)) == [p.name for p in post.params]  # the registry's order
    gen = torch.Generator().manual_seed(0)
    for param in post.params:  # the same bijection (HalfCauchy's support is [0, inf), log all the same)
        u = torch.randn(param.unconstrained_shape, generator=gen, dtype=torch.float64)
        pyro_transform = biject_to(trace.nodes[param.name]["fn"].support)
        torch.testing.assert_close(pyro_transform(u), param.transform(u))
    point = pdb.reference_point(name)
    assert np.isfinite(_log_joint(post.model, args, point))


@pytest.mark.parametrize("name", NAMES)
def test_log_density_matches_stan_program(name):
    """Pyro's log joint and the transcribed Stan target differ by the same constant at two points."""
    post, data = pdb.get(name), pdb.load_data(name)
    args = post.model_args(data)
    points = [_shifted_point(name, 1.0), _shifted_point(name, -1.0)]
    pyro_lp = [_log_joint(post.model, args, x) for x in points]
    stan_lp = [STAN_TARGETS[name](data, {k: v.numpy() for k, v in x.items()}) for x in points]
    assert abs(pyro_lp[0] - pyro_lp[1]) > 1e-3  # the two points differ in density
    scale = max(1.0, abs(pyro_lp[0]))
    assert pyro_lp[0] - pyro_lp[1] == pytest.approx(stan_lp[0] - stan_lp[1], abs=1e-9 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_wgfinfer_target_batches_the_model(name):
    post, args = pdb.get(name), pdb.model_args(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the per-particle fallback warns
        target = PyroTarget(post.model, args, dtype=torch.float64)
    assert target.batched
    assert target.site_names == [p.name for p in post.params]
    assert target.dim == sum(int(np.prod(p.unconstrained_shape)) for p in post.params)
    point = pdb.reference_point(name)
    free = pdb.unconstrain(name, {k: v.numpy() for k, v in point.items()})
    for param in post.params:  # Pyro's bijection is the registry's
        ours = torch.as_tensor(free[param.name])
        torch.testing.assert_close(target.transforms[param.name](point[param.name]), ours)
    z = torch.as_tensor(pdb.flatten(name, free)).unsqueeze(0)
    assert torch.isfinite(target.log_density(z)).all()


def test_flat_prior():
    flat = pdb.FlatPrior(pyro.distributions.constraints.positive_ordered_vector, (3,), dtype=torch.float64)
    draws = flat.sample((5,))
    assert draws.shape == (5, 3) and draws.dtype == torch.float64
    assert bool(flat.support.check(draws).all())
    expanded = flat.expand((4,))
    assert isinstance(expanded, pdb.FlatPrior) and expanded.batch_shape == (4,)
    lp = expanded.log_prob(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
    assert lp.shape == (4,) and lp.dtype == torch.float64 and not lp.any()


def _loop_hmm(log_trans, log_emit):
    alpha = log_emit[0]
    for t in range(1, log_emit.shape[0]):
        alpha = torch.logsumexp(alpha[:, None] + log_trans, dim=0) + log_emit[t]
    return torch.logsumexp(alpha, dim=0)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 33])
def test_hmm_log_likelihood_matches_loop(n):
    gen = torch.Generator().manual_seed(n)
    log_trans = torch.randn(3, 3, generator=gen, dtype=torch.float64).log_softmax(-1)
    log_emit = torch.randn(2, n, 3, generator=gen, dtype=torch.float64)
    batched = pdb.hmm_log_likelihood(log_trans, log_emit)
    expected = torch.stack([_loop_hmm(log_trans, e) for e in log_emit])
    torch.testing.assert_close(batched, expected)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 200])
def test_linear_recursion_matches_loop(n):
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(3, n, generator=gen, dtype=torch.float64)
    c = torch.tensor([[-0.9], [0.3], [1.05]], dtype=torch.float64)
    expected = a.clone()
    for t in range(1, n):
        expected[:, t] = a[:, t] + c[:, 0] * expected[:, t - 1]
    torch.testing.assert_close(pdb.linear_recursion(a, c), expected)


def _write_zipped_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(path.name.removesuffix(".zip"), json.dumps(obj))


def _fake_root(tmp_path: Path) -> Path:
    """A posteriordb-like directory: gp_pois_regr-gp_regr with synthetic draws, and an unregistered
    posterior with a matrix parameter."""
    gen = np.random.default_rng(0)
    chains = [{k: list(np.exp(gen.normal(size=50))) for k in ("rho", "alpha", "sigma")} for _ in range(2)]
    _write_zipped_json(tmp_path / "reference_draws" / "gp_pois_regr-gp_regr.json.zip", chains)
    other = [{"s": [1.0, 2.0], "A[1,1]": [11.0, 11.5], "A[2,1]": [21.0, 21.5], "A[1,2]": [12.0, 0.0]}]
    other[0]["A[2,2]"] = [22.0, 0.5]
    _write_zipped_json(tmp_path / "reference_draws" / "x-y.json.zip", other)
    (tmp_path / "SOURCE_COMMIT").write_text("abc\n")
    return tmp_path


def test_load_reference_draws_indexing(tmp_path):
    root = _fake_root(tmp_path)
    draws = pdb.load_reference_draws("x-y", root)
    assert draws["s"].shape == (2,) and draws["A"].shape == (2, 2, 2)
    np.testing.assert_array_equal(draws["A"][0], [[11.0, 12.0], [21.0, 22.0]])
    by_chain = pdb.load_reference_draws("gp_pois_regr-gp_regr", root, by_chain=True)
    assert by_chain["rho"].shape == (2, 50)
    assert pdb.load_reference_draws("gp_pois_regr-gp_regr", root)["rho"].shape == (100,)


def test_reference_script(tmp_path):
    root = _fake_root(tmp_path / "pdb")
    out = tmp_path / "moments.json"
    script = REPO / "benchmarks" / "posteriordb_reference.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(script), "--posteriordb", str(root), "--out", str(out)]
    done = subprocess.run(
        command + ["--names", "gp_pois_regr-gp_regr"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moments.json", "pdb"]  # writes only --out
    doc = json.loads(out.read_text())
    assert doc["source_commit"] == "abc"
    site = doc["posteriors"]["gp_pois_regr-gp_regr"]["sites"]["rho"]
    rho = pdb.load_reference_draws("gp_pois_regr-gp_regr", root)["rho"]
    assert site["unconstrained"]["mean"] == pytest.approx(np.log(rho).mean())
    assert site["constrained"]["sd"] == pytest.approx(rho.std(ddof=1))
    assert 0 < site["unconstrained"]["se_mean"] < site["unconstrained"]["sd"]
    assert set(site["unconstrained"]) == {"mean", "sd", "se_mean", "se_sd", "ess_bulk"}


def test_packaged_moments_cover_the_registry():
    doc = json.loads((pdb.packaged_root() / pdb.MOMENTS_FILE).read_text())
    assert sorted(doc["posteriors"]) == NAMES
    assert doc["source_commit"] == (pdb.packaged_root() / "SOURCE_COMMIT").read_text().strip()
    for name in NAMES:
        moments = pdb.reference_moments(name)
        for param in pdb.get(name).params:
            assert moments[param.name]["mean"].shape == param.unconstrained_shape
            assert (moments[param.name]["se_mean"] > 0).all()
        constrained = pdb.reference_moments(name, scale="constrained")
        assert all(constrained[p.name]["mean"].shape == p.shape for p in pdb.get(name).params)


@needs_root
def test_packaged_copy_matches_posteriordb():
    packaged = pdb.packaged_root()
    for name in NAMES:
        data_name = pdb.get(name).data_name
        for sub in (f"data/{data_name}.json.zip", f"posteriors/{name}.json"):
            assert (packaged / sub).read_bytes() == (ROOT / sub).read_bytes(), sub
    assert (packaged / "SOURCE_COMMIT").read_text() == (ROOT / "SOURCE_COMMIT").read_text()
    name = "gp_pois_regr-gp_regr"  # one recomputation (the script regenerates all of them)
    fresh = pdb.reference_moments(name, ROOT)
    for site, stored in pdb.reference_moments(name).items():
        for key, value in stored.items():
            np.testing.assert_allclose(value, fresh[site][key], rtol=1e-12)


def test_eight_schools():
    sigma, y = eight_schools.model_args()
    traces = {}
    for kind in ("centered", "noncentered"):
        model = getattr(eight_schools, kind)
        trace = poutine.trace(model).get_trace(sigma, y)
        assert _latent_sites(trace) == {p.name: p.shape for p in eight_schools.PARAMS[kind]}
        assert PyroTarget(model, (sigma, y), dtype=torch.float64).batched
        traces[kind] = trace
    # the same posterior: p_c(mu, tau, theta) = p_nc(mu, tau, (theta - mu) / tau) / tau^J
    mu, tau = torch.tensor(1.5, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    theta = torch.linspace(-5, 10, 8, dtype=torch.float64)
    lp_c = _log_joint(eight_schools.centered, (sigma, y), {"mu": mu, "tau": tau, "theta": theta})
    point_nc = {"mu": mu, "tau": tau, "theta_trans": (theta - mu) / tau}
    lp_nc = _log_joint(eight_schools.noncentered, (sigma, y), point_nc)
    assert lp_c == pytest.approx(lp_nc - 8 * np.log(3.0), rel=1e-12)


# ------------------------------------------------------------------------------- slow check
_DRAWS = {"hmm_example-hmm_example": 800, "bball_drive_event_0-hmm_drive_0": 800, "diamonds-diamonds": 300}
NUTS_RUNS: dict[str, tuple[int, int]] = {name: (200, _DRAWS.get(name, 500)) for name in NAMES}
"""(warmup, draws) of the one-chain NUTS run of each posterior: draws for an ESS of about 300 or more
on every coordinate (the HMMs' simplex coordinates mix at about 0.4 ESS per draw, diamonds' at about
1.8, the rest at about 1); the warmup only adapts the step size (the mass matrix is fixed, see
:class:`_HessianMassNUTS`)."""

Z_MAX = 4.0


class _HessianMassNUTS(NUTS):
    """NUTS with a fixed dense inverse mass matrix: the inverse Hessian of the potential at the
    initial point, the reference point (the step size is still adapted).

    Pyro's (and Stan's) adapted dense mass is shrunk towards ``1e-3 I``, which swamps the posterior
    variance along the thin directions of kilpisjarvi (smallest variance ~1e-9: un-centred years) and
    diamonds, so NUTS runs at tree depth 10 there.  The mass matrix changes the efficiency of NUTS,
    not its target, so the check still tests the translation's density.
    """

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        super().setup(warmup_steps, *args, **kwargs)
        names = tuple(sorted(self.initial_params))  # Pyro's order in its one dense block
        point = {n: self.initial_params[n].detach() for n in names}
        sizes = [point[n].numel() for n in names]

        def potential(flat: torch.Tensor) -> torch.Tensor:
            parts = torch.split(flat, sizes)
            return self.potential_fn(
                {n: p.reshape(point[n].shape) for n, p in zip(names, parts, strict=True)}
            )

        flat = torch.cat([point[n].reshape(-1) for n in names])
        cov = torch.linalg.inv(torch.autograd.functional.hessian(potential, flat))
        self.mass_matrix_adapter.inverse_mass_matrix = {names: (cov + cov.T) / 2}


def _z_scores(
    name: str, draws: dict[str, np.ndarray], scale: str = "unconstrained"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z of the means, sd ratios and z of the sd ratios, per coordinate on ``scale``.

    Our standard errors are ArviZ's, floored by the ones the reference implies at our ESS: a short
    run that has missed a heavy tail (bball's ``lambda[2]``: kurtosis 43) underestimates both its sd
    and the sd's standard error, and the 10 000 reference draws know the tails better.
    """
    free = pdb.unconstrain(name, draws) if scale == "unconstrained" else draws
    ref = pdb.reference_moments(name, scale=scale)
    z_mean, ratio, z_sd = [], [], []
    for param in pdb.get(name).params:
        ours, theirs = pdb.chain_moments(free[param.name]), ref[param.name]
        se_mean = np.maximum(ours["se_mean"], ours["se_mean"] * theirs["sd"] / ours["sd"])
        se_sd = np.maximum(ours["se_sd"], theirs["se_sd"] * np.sqrt(theirs["ess_bulk"] / ours["ess_bulk"]))
        z_mean.append(np.ravel((ours["mean"] - theirs["mean"]) / np.hypot(se_mean, theirs["se_mean"])))
        r = ours["sd"] / theirs["sd"]
        ratio.append(np.ravel(r))
        z_sd.append(np.ravel((r - 1) / (r * np.hypot(se_sd / ours["sd"], theirs["se_sd"] / theirs["sd"]))))
    return np.concatenate(z_mean), np.concatenate(ratio), np.concatenate(z_sd)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_nuts_agrees_with_reference(name):
    """A seeded one-chain NUTS run of the translation, started at the reference point, against the
    reference draws: |z| < 4 for every mean and sd ratio on the unconstrained scale, and on the
    constrained one (prints a table row)."""
    post, args = pdb.get(name), pdb.model_args(name)
    warmup, n_draws = NUTS_RUNS[name]
    pyro.set_rng_seed(0)
    kernel = _HessianMassNUTS(
        post.model,
        jit_compile=True,
        ignore_jit_warnings=True,
        full_mass=True,
        adapt_mass_matrix=False,
        init_strategy=init_to_value(values=pdb.reference_point(name)),
    )
    mcmc = MCMC(kernel, num_samples=n_draws, warmup_steps=warmup, num_chains=1, disable_progbar=True)
    start = time.perf_counter()
    with pyro.validation_enabled(False):  # the fast tests validate; here it costs up to a third
        mcmc.run(*args)
    seconds = time.perf_counter() - start
    draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    z_mean, ratio, z_sd = _z_scores(name, draws)
    zc_mean, ratio_c, zc_sd = _z_scores(name, draws, "constrained")
    print(
        f"\n| {name} | {np.abs(z_mean).max():.2f} | {ratio.min():.3f}-{ratio.max():.3f} | "
        f"{np.abs(z_sd).max():.2f} | {np.abs(zc_mean).max():.2f} | {np.abs(zc_sd).max():.2f} | "
        f"{seconds:.0f} |"
    )
    coords = pdb.coordinate_names(name)
    assert np.abs(z_mean).max() < Z_MAX, dict(zip(coords, np.round(z_mean, 2), strict=True))
    assert np.abs(z_sd).max() < Z_MAX, dict(zip(coords, np.round(ratio, 3), strict=True))
    assert np.abs(zc_mean).max() < Z_MAX, np.round(zc_mean, 2)
    assert np.abs(zc_sd).max() < Z_MAX, np.round(ratio_c, 3)
