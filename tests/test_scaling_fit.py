"""Scaling-law fit (docs/reference.md §8): objective against a direct formula, L-BFGS against scipy, recovery of known laws,
compute-optimal allocation against a hand calculation and a numerical minimisation, frontier power laws."""
import numpy as np
import pytest
import scipy.optimize

from slm_jax.scaling import fit

CHINCHILLA = fit.Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
SMALL_GRID = {"alpha": [0.0, 0.5, 1.0], "beta": [0.0, 0.5, 1.0], "e": [-1.0, 0.0, 1.0], "a": [0.0, 5.0, 10.0],
              "b": [0.0, 5.0, 10.0]}


def _grid_runs(law, noise=0.0, seed=0, sizes=np.logspace(7, 10, 5), tokens=np.logspace(9, 12, 5)):
  n, d = (v.ravel() for v in np.meshgrid(sizes, tokens))
  loss = law.loss(n, d) * np.exp(noise * np.random.default_rng(seed).standard_normal(n.shape))
  return n, d, loss


def _huber(r, delta):
  return np.where(np.abs(r) <= delta, 0.5 * r ** 2, delta * (np.abs(r) - delta / 2))


def test_objective_matches_direct_formula_and_finite_differences():
  n, d, loss = _grid_runs(CHINCHILLA, noise=0.02)
  log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
  thetas = np.array([[np.log(406.4), np.log(410.7), np.log(1.69), 0.34, 0.28],  # residuals ~ noise (both regimes)
                     [5.0, 6.0, 0.3, 0.3, 0.25], [1.0, 2.0, -0.5, 0.1, 0.2]])
  f, g = fit.objective(thetas, log_n, log_d, log_l)
  for th, fi, gi in zip(thetas, f, g):
    a, b, e, alpha, beta = th
    pred = np.exp(e) + np.exp(a) / n ** alpha + np.exp(b) / d ** beta
    np.testing.assert_allclose(fi, _huber(np.log(pred) - log_l, 1e-3).sum(), rtol=1e-10)
    h = 1e-8 * np.eye(5)
    num = [(fit.objective((th + hi)[None], log_n, log_d, log_l)[0][0]
            - fit.objective((th - hi)[None], log_n, log_d, log_l)[0][0]) / 2e-8 for hi in h]
    np.testing.assert_allclose(gi, num, rtol=1e-5, atol=1e-9)


def test_batched_lbfgs_matches_scipy_on_rosenbrock():
  def fg(x):
    a, b = x[:, 0], x[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
    return f, g
  starts = np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, -1.0], [-3.0, 5.0]])
  x, f = fit.lbfgs_batched(fg, starts, max_iter=2000, ftol=1e-20, gtol=1e-10)
  for s, xi in zip(starts, x):
    ref = scipy.optimize.minimize(lambda t: tuple(v[0] for v in fg(t[None])), s, jac=True, method="L-BFGS-B",
                                  options={"ftol": 1e-20, "gtol": 1e-10})
    np.testing.assert_allclose(xi, ref.x, atol=1e-5)
    np.testing.assert_allclose(xi, [1.0, 1.0], atol=1e-5)


def test_initial_grid_is_the_spec_grid():
  g = fit.initial_grid()
  assert g.shape == (5 * 5 * 5 * 6 * 6, 5)
  a, b, e, alpha, beta = g.T
  assert set(alpha) == set(beta) == {0.0, 0.5, 1.0, 1.5, 2.0}
  assert set(e) == {-1.0, -0.5, 0.0, 0.5, 1.0}
  assert set(a) == set(b) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}


def test_fit_recovers_noise_free_law_exactly():
  n, d, loss = _grid_runs(CHINCHILLA)
  r = fit.fit_law(n, d, loss)
  for k, v in CHINCHILLA.to_dict().items():
    np.testing.assert_allclose(getattr(r.law, k), v, rtol=1e-5, err_msg=k)
  assert r.num_starts == 4500


@pytest.mark.parametrize("law", [CHINCHILLA, fit.Law(E=1.2, A=50.0, B=800.0, alpha=0.25, beta=0.4)])
def test_fit_recovers_known_law_from_noisy_runs(law):
  n, d, loss = _grid_runs(law, noise=0.005, seed=3, sizes=np.logspace(7, 10, 6), tokens=np.logspace(9, 12, 6))
  r = fit.fit_law(n, d, loss)
  assert abs(r.law.alpha - law.alpha) < 0.03 and abs(r.law.beta - law.beta) < 0.03
  assert abs(r.law.E - law.E) < 0.06
  assert abs(r.law.n_opt_exponent - law.n_opt_exponent) < 0.03
  # The fit is at least as good as the truth on its own objective (it found the global optimum region).
  truth = np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])
  f_truth = fit.objective(truth[None], np.log(n), np.log(d), np.log(loss))[0][0]
  assert r.objective <= f_truth * (1 + 1e-9)


def test_fit_rejects_non_positive_values():
  n, d, loss = _grid_runs(CHINCHILLA)
  loss[3] = 0.0
  with pytest.raises(ValueError, match="loss must be finite and positive"):
    fit.fit_law(n, d, loss, grid=SMALL_GRID)


def test_compute_optimal_hand_calculation_textless():
  # Hand calculation (docs/reference.md §7 / §8): G = (0.25*13.9 / (0.24*39.8))^(1/0.49) = 0.36380^2.0408 = 0.12696;
  # C/6 = 1.1433e20; N_opt = G * (C/6)^(0.24/0.49) = 0.12696 * 6.676e9 = 8.48e8; D_opt = (C/6) / N_opt = 1.35e11.
  law = fit.TEXTLESS
  np.testing.assert_allclose(law.G, 0.12696, rtol=1e-3)
  n_opt, d_opt = law.compute_optimal(6.86e20)
  np.testing.assert_allclose(n_opt, 8.48e8, rtol=5e-3)
  np.testing.assert_allclose(d_opt, 1.35e11, rtol=5e-3)
  np.testing.assert_allclose(6 * n_opt * d_opt, 6.86e20, rtol=1e-12)
  np.testing.assert_allclose(law.n_opt_exponent, 0.24 / 0.49)
  np.testing.assert_allclose(law.d_opt_exponent, 0.25 / 0.49)


@pytest.mark.parametrize("law", [fit.TEXTLESS, CHINCHILLA])
def test_compute_optimal_minimises_loss_on_the_isoflop_line(law):
  for c in (1e18, 6.86e20, 1e23):
    res = scipy.optimize.minimize_scalar(lambda ln: law.loss(np.exp(ln), c / (6 * np.exp(ln))),
                                         bounds=(np.log(1e3), np.log(1e14)), method="bounded",
                                         options={"xatol": 1e-10})
    n_opt, _ = law.compute_optimal(c)
    np.testing.assert_allclose(np.exp(res.x), n_opt, rtol=1e-4)


def test_pareto_frontier_and_power_law():
  compute = np.array([1.0, 2.0, 2.0, 4.0, 8.0, 16.0])
  acc = np.array([0.50, 0.49, 0.55, 0.54, 0.60, 0.58])
  np.testing.assert_array_equal(fit.pareto_frontier(compute, acc), [0, 2, 4])
  loss = np.array([3.0, 2.9, 3.1, 2.5, 2.6, 2.0])
  np.testing.assert_array_equal(fit.pareto_frontier(compute, loss, higher_is_better=False), [0, 1, 3, 5])
  c = np.logspace(18, 21, 7)
  k, gamma = fit.fit_power_law(c, 0.3 * c ** 0.021)
  np.testing.assert_allclose([k, gamma], [0.3, 0.021], rtol=1e-8)
  with pytest.raises(ValueError, match="at least 2 points"):
    fit.fit_power_law([1e20], [0.5])


def test_allocation_intervals_cover_the_laws():
  laws = [fit.Law(1.7, 400.0, 400.0, a, 0.28) for a in np.linspace(0.30, 0.38, 41)]
  n_int, d_int = fit.allocation_intervals(laws, 1e21, confidence=1.0)
  ns = [law.compute_optimal(1e21)[0] for law in laws]
  np.testing.assert_allclose(n_int, [min(ns), max(ns)])
  np.testing.assert_allclose(d_int[0] * n_int[1], 1e21 / 6, rtol=1e-12)  # D_opt = C / 6N_opt
  ci = fit.law_intervals(laws, confidence=1.0)
  np.testing.assert_allclose(ci["alpha"], [0.30, 0.38])
