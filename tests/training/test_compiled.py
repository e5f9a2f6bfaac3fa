"""The compiled click model (engine/training/compiled.py): equal to booster.predict, cached, and optional."""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from training_setup import TRAINED_AT

from engine.clock import FixedClock
from engine.errors import ModelError
from engine.training import TrainedModel, save_model
from engine.training import compiled as compiled_module
from engine.training.compiled import (
    COMPILE_MIN_ROWS,
    CompiledModel,
    CompiledScorer,
    compiled_predictor,
    fastest_scorer,
    probe_rows,
)

needs_tl2cgen = pytest.mark.skipif(importlib.util.find_spec("tl2cgen") is None or compiled_module._find_compiler() is None,
                                   reason="optional extra 'fast' (tl2cgen) or a C compiler missing")
FEATURES = [f"f{j}" for j in range(36)]
# LightGBM's missing-value rules the compiled form reproduces: NaN is missing (default), nothing is missing
MISSING_RULES = {"nan": {}, "none": {"use_missing": False}}


def noisy_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 rows with 15 % NaN, 15 % exact zeros and a few values in LightGBM's ±1e-35 'zero' band."""
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.15] = 0.0
    x[rng.random(x.shape) < 0.02] = np.float32(1e-37)
    return x


def train(tmp_path_factory, **overrides) -> TrainedModel:
    rng = np.random.default_rng(3)
    x = noisy_rows(rng, 6000)
    signal = np.nan_to_num(x[:, 0], nan=1.0) + (x[:, 1] == 0) - np.isnan(x[:, 2]) + 0.5 * np.nan_to_num(x[:, 3])
    y = (signal + rng.normal(scale=0.5, size=len(x)) > 0.3).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "min_data_in_leaf": 20,
              "verbose": -1, "num_threads": 1, "seed": 1, "deterministic": True, **overrides}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=40)
    return save_model(tmp_path_factory.mktemp("models"), "click", booster, {"features": FEATURES},
                      FixedClock(TRAINED_AT))


@pytest.fixture(scope="module", params=list(MISSING_RULES))
def model(request, tmp_path_factory) -> TrainedModel:
    return train(tmp_path_factory, **MISSING_RULES[request.param])


@needs_tl2cgen
@pytest.mark.parametrize("order", ["C", "F"])
def test_equal_to_booster_predict_on_float32_with_nans_and_zeros(model, order, capfd, recwarn) -> None:
    predict = compiled_predictor(model)
    assert isinstance(predict, CompiledModel)
    x = np.asarray(noisy_rows(np.random.default_rng(9), 20_000), order=order)
    expected = model.booster.predict(x.astype(np.float64))
    got = predict(x)
    assert got.dtype == np.float64 and got.shape == (len(x),)
    assert np.abs(got - expected).max() <= 1e-12
    assert expected.std() > 0.05  # a model that predicts one constant would make equality meaningless
    # no chatter on the terminal (tl2cgen's log lines, a Treelite version notice) and no warnings
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert len(recwarn) == 0


@needs_tl2cgen
def test_float64_input_empty_input_and_wrong_width(model) -> None:
    predict = compiled_predictor(model)
    x = noisy_rows(np.random.default_rng(5), 500).astype(np.float64)
    assert np.abs(predict(x) - model.booster.predict(x)).max() <= 1e-12
    assert predict(x[:0]).shape == (0,)
    with pytest.raises(ModelError, match=r"compiled model expects rows × 36 features, got shape \(500, 35\)"):
        predict(x[:, :35])


@needs_tl2cgen
def test_second_call_reuses_the_cached_library(model, monkeypatch) -> None:
    assert compiled_predictor(model) is not None
    (library,) = (model.path / "compiled").glob("*.so")
    before = library.stat()
    builds = []
    real_build = compiled_module._build
    monkeypatch.setattr(compiled_module, "_build", lambda *a: builds.append(a) or real_build(*a))
    again = compiled_predictor(model)
    assert again is not None and again.library == library
    assert builds == []
    after = library.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    # owner-only: the folder and the library
    assert stat.S_IMODE((model.path / "compiled").stat().st_mode) == 0o700
    assert stat.S_IMODE(after.st_mode) == 0o700


@needs_tl2cgen
def test_an_unloadable_cached_library_is_built_again(model, caplog) -> None:
    assert compiled_predictor(model) is not None
    (library,) = (model.path / "compiled").glob("*.so")
    library.write_bytes(b"not a shared library")
    with caplog.at_level(logging.WARNING, logger="engine.training.compiled"):
        predict = compiled_predictor(model)
    assert predict is not None
    assert "unloadable" in caplog.text
    x = noisy_rows(np.random.default_rng(1), 1000)
    assert np.abs(predict(x) - model.booster.predict(x)).max() <= 1e-12


def _load_in_child(models_dir: Path, build: bool) -> subprocess.CompletedProcess:
    """``compiled_predictor`` of the newest click model in ``models_dir``, run in a child process: a library
    that crashes the process on loading (SIGBUS) must fail the test, not end the test run."""
    code = ("from engine.training.artifacts import load_model\n"
            "from engine.training.compiled import compiled_predictor\n"
            f"predict = compiled_predictor(load_model({str(models_dir)!r}, 'click'), build={build})\n"
            "print('none' if predict is None else predict.library.name)\n")
    root = Path(compiled_module.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


@needs_tl2cgen
@pytest.mark.parametrize("build", [False, True])
def test_a_truncated_cached_library_is_refused_not_loaded(tmp_path_factory, build) -> None:
    # a models folder copied with cp or rsync that was cut short: loading the half library would map
    # pages beyond the end of the file, and the first touch of them kills the process with SIGBUS
    fresh = train(tmp_path_factory)
    assert compiled_predictor(fresh) is not None
    (library,) = (fresh.path / "compiled").glob("*.so")
    whole = library.read_bytes()
    library.write_bytes(whole[:len(whole) // 2])
    done = _load_in_child(fresh.path.parents[1], build)
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-2000:]}"
    assert "unloadable" in done.stderr
    if build:
        (rebuilt,) = (fresh.path / "compiled").glob("*.so")
        assert done.stdout.strip() == rebuilt.name
        assert rebuilt.stat().st_size == len(whole)
    else:
        assert done.stdout.strip() == "none"


@needs_tl2cgen
def test_the_library_name_survives_the_log_token_mask(model) -> None:
    # the log filter masks runs of 32+ token characters as secrets: a log line must still name the file
    from engine.push.base import _TOKENISH

    predict = compiled_predictor(model)
    assert predict is not None
    assert _TOKENISH.search(predict.library.name) is None, predict.library.name


@needs_tl2cgen
def test_a_read_only_file_system_builds_in_a_temporary_folder(tmp_path_factory, monkeypatch, caplog) -> None:
    # a models folder on a read-only mount (a container image, a read-only volume) answers EROFS, not EACCES
    fresh = train(tmp_path_factory)
    real_mkstemp = tempfile.mkstemp

    def read_only_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(fresh.path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(compiled_module.tempfile, "mkstemp", read_only_mkstemp)
    with caplog.at_level(logging.WARNING, logger="engine.training.compiled"):
        predict = compiled_predictor(fresh)
    assert predict is not None, caplog.text
    assert not predict.library.is_relative_to(fresh.path)
    x = noisy_rows(np.random.default_rng(2), 1000)
    assert np.abs(predict(x) - fresh.booster.predict(x)).max() <= 1e-12
    assert list((fresh.path / "compiled").glob("*.so")) == []


@needs_tl2cgen
def test_no_compiler_means_none_and_one_log_line(model, monkeypatch, caplog) -> None:
    monkeypatch.setattr(compiled_module, "_find_compiler", lambda: None)
    with caplog.at_level(logging.INFO, logger="engine.training.compiled"):
        assert compiled_predictor(model) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"click/{model.version} not compiled (LightGBM predicts): no C compiler (gcc, cc or clang; or $CC) on PATH"]


@needs_tl2cgen
def test_a_failing_compiler_means_none(model, monkeypatch, caplog, tmp_path) -> None:
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o700)
    monkeypatch.setattr(compiled_module, "_find_compiler", lambda: str(broken))
    # a model of its own, so that no cached library exists
    fresh = save_model(tmp_path / "models", "click", model.booster, {"features": FEATURES}, FixedClock(TRAINED_AT))
    with caplog.at_level(logging.WARNING, logger="engine.training.compiled"):
        assert compiled_predictor(fresh) is None
    (record,) = caplog.records
    assert record.getMessage().startswith(f"click/{fresh.version} not compiled (LightGBM predicts): ")
    assert list((fresh.path / "compiled").iterdir()) == []  # no half-written library left behind


@needs_tl2cgen
def test_zero_as_missing_is_refused_before_compiling(tmp_path_factory, caplog) -> None:
    # LightGBM sends 0 and NaN the split's default way; the generated code sends both where 0 compares
    zero = train(tmp_path_factory, zero_as_missing=True)
    with caplog.at_level(logging.INFO, logger="engine.training.compiled"):
        assert compiled_predictor(zero) is None
    (record,) = caplog.records
    assert record.getMessage().startswith(f"click/{zero.version} not compiled (LightGBM predicts): "
                                          "zero-as-missing splits on feature(s) [0, 1, 2")
    assert not (zero.path / "compiled").exists()


def test_without_tl2cgen_means_none(model, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "tl2cgen", None)  # makes `import tl2cgen` raise ImportError
    with caplog.at_level(logging.INFO, logger="engine.training.compiled"):
        assert compiled_predictor(model) is None
    (record,) = caplog.records
    assert "not compiled (LightGBM predicts)" in record.getMessage()
    assert "install the 'fast' extra" in record.getMessage()


class _WrongMissing(CompiledModel):
    """A library that sends missing values down the wrong branch: NaN read as a huge number."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster, self.library, self.n_features = booster, None, booster.num_feature()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=1e30))


@needs_tl2cgen
def test_a_library_that_differs_from_lightgbm_is_refused(model, monkeypatch, caplog) -> None:
    wrong = _WrongMissing(model.booster)
    monkeypatch.setattr(compiled_module, "_cached_or_built", lambda *a: wrong)
    with caplog.at_level(logging.WARNING, logger="engine.training.compiled"):
        assert compiled_predictor(model) is None
    assert "compiled library refused (LightGBM predicts): differs from booster.predict by" in caplog.text


def test_probe_rows_cross_every_threshold_both_ways(model) -> None:
    x = probe_rows(model.booster, n=2048)
    assert x.dtype == np.float32 and x.shape == (2048, 36)
    assert np.isnan(x[0]).all() and (x[1] == 0).all()
    for tree in model.booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            stack += [node["left_child"], node["right_child"]]
            column = x[:, node["split_feature"]].astype(np.float64)
            if abs(node["threshold"]) < 1e38:  # beyond float32 (LightGBM writes ±1e300) every input is on one side
                assert (column <= node["threshold"]).any() and (column > node["threshold"]).any()


@needs_tl2cgen
def test_fastest_scorer_builds_only_for_enough_rows_then_reuses_the_cache(tmp_path_factory) -> None:
    fresh = train(tmp_path_factory)  # its own folder: nothing cached yet
    assert fastest_scorer(fresh, rows=COMPILE_MIN_ROWS - 1) is fresh
    assert not (fresh.path / compiled_module.CACHE_DIR).exists()
    built = fastest_scorer(fresh, rows=COMPILE_MIN_ROWS)
    assert isinstance(built, CompiledScorer)
    # once cached, a small audience uses the library too
    assert isinstance(fastest_scorer(fresh, rows=10), CompiledScorer)
    assert fastest_scorer(fresh, rows=0) is fresh


@needs_tl2cgen
def test_compiled_scorer_takes_named_columns_like_predict_matrix(model) -> None:
    scorer = fastest_scorer(model, rows=COMPILE_MIN_ROWS)
    assert isinstance(scorer, CompiledScorer)
    x = noisy_rows(np.random.default_rng(4), 3_000)
    # the planner's matrix: the model's columns shuffled among extra ones, column-major
    names = ["extra_a", *reversed(FEATURES), "extra_b"]
    wide = np.asfortranarray(np.column_stack([x[:, :1] * 7, x[:, ::-1], x[:, 1:2] - 3]))
    got = scorer.predict_matrix(wide, names)
    np.testing.assert_array_equal(got, model.predict_matrix(wide, names))
    np.testing.assert_allclose(got, model.booster.predict(x.astype(np.float64)), rtol=0, atol=1e-12)
    assert scorer.predict_matrix(wide[:0], names).shape == (0,)
    with pytest.raises(ModelError, match="missing from the input"):
        scorer.predict_matrix(wide, ["other" if n == "f0" else n for n in names])
