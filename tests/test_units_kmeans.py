"""k-means: scikit-learn KMeans pickled with joblib (TWIST's format) vs our .npy path and JAX assignment."""
import numpy as np
import pytest

sklearn_cluster = pytest.importorskip("sklearn.cluster")
joblib = pytest.importorskip("joblib")

from slm_jax.units import dedup, kmeans  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3000, 24)).astype(np.float32) + rng.integers(0, 4, (3000, 1)).astype(np.float32)
  km = sklearn_cluster.KMeans(n_clusters=50, n_init=1, random_state=0).fit(x)
  path = tmp_path_factory.mktemp("km") / "km50.bin"
  joblib.dump(km, path)
  test = rng.standard_normal((2000, 24)).astype(np.float32) * 1.5
  return km, str(path), test


def test_pickle_refused_without_the_flag(fitted):
  _, path, _ = fitted
  with pytest.raises(kmeans.PickleRefused, match="runs code from the file.*--trust_pickled_kmeans"):
    kmeans.load_centroids(path)


def test_trusted_joblib_assigns_exactly_as_sklearn_predict(fitted):
  km, path, test = fitted
  c = kmeans.load_centroids(path, trust_pickle=True)
  assert c.shape == (50, 24) and c.dtype == np.float32
  ours = np.asarray(kmeans.assign(test.reshape(4, 500, 24), c)).reshape(-1)
  np.testing.assert_array_equal(ours, km.predict(test))


def test_npy_conversion_gives_the_same_units(fitted, tmp_path):
  km, path, test = fitted
  with pytest.raises(kmeans.PickleRefused):
    kmeans.convert_to_npy(path, str(tmp_path / "c.npy"))
  kmeans.convert_to_npy(path, str(tmp_path / "c.npy"), trust_pickle=True)
  assert kmeans.is_npy(str(tmp_path / "c.npy"))
  c = kmeans.load_centroids(str(tmp_path / "c.npy"))  # no flag needed for a plain array
  np.testing.assert_array_equal(np.asarray(kmeans.assign(test, c)), km.predict(test))


def test_npy_with_objects_is_not_loaded(tmp_path):
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError):
    kmeans.load_centroids(str(tmp_path / "obj.npy"))


def test_fit_is_deterministic_and_finds_separated_clusters():
  rng = np.random.default_rng(1)
  centers = rng.standard_normal((5, 3)).astype(np.float32) * 20
  x = np.concatenate([c + rng.standard_normal((200, 3)).astype(np.float32) for c in centers])
  a, b = kmeans.fit(x, 5, seed=3), kmeans.fit(x, 5, seed=3)
  np.testing.assert_array_equal(a, b)
  labels = np.asarray(kmeans.assign(x, a)).reshape(5, 200)
  assert all(len(set(row)) == 1 for row in labels) and len(set(labels[:, 0])) == 5


def test_dedup_runs_and_durations():
  units, durations = dedup.dedup([3, 3, 7, 7, 7, 3, 9])
  assert units.tolist() == [3, 7, 3, 9] and durations.tolist() == [2, 3, 1, 1]
  np.testing.assert_array_equal(dedup.expand(units, durations), [3, 3, 7, 7, 7, 3, 9])
  rec = dedup.features_record(np.array([1, 1, 1]), "a.flac")
  assert rec == {"units": [1], "duration": [3], "file_name": "a.flac"}
  assert dedup.dedup([])[0].size == 0
