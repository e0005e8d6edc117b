"""Test and benchmark problems: what the tests, examples and benchmarks share, written once.

The core (samplers, schemes, flows, filters, save files) never imports this package; the demo
application (:mod:`wgfinfer.cli`) may.  One module per kind of problem:

* :mod:`~wgfinfer.problems.gaussians`: Ornstein-Uhlenbeck marginals, the exact Gaussian JKO iterates,
  Gaussian KL divergences, Gaussian mixtures and the exact (Kalman) filters of the OU process;
* :mod:`~wgfinfer.problems.barenblatt`: exact porous-medium (Barenblatt) solutions;
* :mod:`~wgfinfer.problems.finite_volume`: an upwind finite-volume solver of the
  aggregation-diffusion equation, the grid reference of ``examples/aggregation.py``;
* :mod:`~wgfinfer.problems.logistic`: the Bayesian logistic regression of Fan et al. (2022) and
  Mokrov (2022) (Pyro model, hand-written log-posterior, predictive metrics, the benchmark's
  sampler settings);
* :mod:`~wgfinfer.problems.datasets`: its data sets (breast cancer, Breiman's generators, Pima,
  synthetic), split and standardised;
* :mod:`~wgfinfer.problems.filtering`: the Mokrov 2022 §4.5 filtering problem (sine-well potential);
* :mod:`~wgfinfer.problems.posteriordb`: thirteen posteriordb posteriors translated from Stan to Pyro,
  with their data and reference moments (shipped in ``posteriordb_data/``);
* :mod:`~wgfinfer.problems.eight_schools`: eight schools, centred and non-centred.

Nothing is imported here, so ``import wgfinfer.problems.gaussians`` does not pull in Pyro or
scikit-learn.
"""
