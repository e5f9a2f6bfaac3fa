"""An optional compiled form of a LightGBM model: tl2cgen turns the trees into a C shared library.

The planner scores millions of (user, item) rows with the click model; LightGBM's own
``Booster.predict`` spends 4–5 CPU-s per million rows on a 150 × 31-leaf model, the compiled library
1.1–1.3 (``benchmarks/predict.py``, planner rows, 1 or 2 threads). The library must give the *same* probabilities, so each load checks
it against ``booster.predict`` on rows built from the model's own split thresholds (each side of every
threshold, NaN, zeros), and is refused on any difference. Models with zero-as-missing splits are
refused before compiling (tl2cgen routes 0 by value there; LightGBM sends it the default way).

Everything here is optional: without ``tl2cgen`` (``pip install -e .[fast]``), without a C compiler,
or on any failure :func:`compiled_predictor` returns None after one log line and the caller keeps
LightGBM. The library is cached beside the model, ``<model.path>/compiled/<tag>.<digest>.so``, where
the tag names the platform, the tl2cgen version and a digest of the booster's text, so a cached library
is only reused for the very same trees, and the digest is the library's own (SHA-256): a damaged or
partly copied library is refused before it is loaded (loading a truncated one kills the process
with SIGBUS, beyond any ``except``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from engine.errors import ModelError
from engine.training.artifacts import TrainedModel

__all__ = ["CompiledModel", "CompiledScorer", "compiled_predictor", "fastest_scorer", "probe_rows"]

log = logging.getLogger(__name__)

CACHE_DIR = "compiled"
# a models folder where the library cannot be kept: built in a temporary folder for this process instead
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
PROBE_ROWS = 4096
# LightGBM and the library both add the trees in float64 and apply the same sigmoid; the measured
# difference is exactly 0. The tolerance only absorbs a last-bit difference of another libm's exp().
TOLERANCE = 1e-12
_COMPILERS = ("gcc", "cc", "clang")
# tl2cgen compiles with -O3; a later -O1 overrides it: gcc then spends 2.3 CPU-s instead of 5.3 on a
# 150 × 31-leaf model and the library predicts as fast (measured 1.14–1.18 CPU-s per million rows
# either way). No -ffast-math or -march: the results must stay bit-equal and the cache portable.
COMPILER_OPTIONS = ("-O1",)
# the trees are split over this many C files (smaller functions compile faster; 8 vs 2: 2.3 vs 3.4 CPU-s)
SOURCE_FILES = 8
# LightGBM's kZeroThreshold (1e-35f as a double): LightGBM reads input values within it as 0
ZERO_BAND = 1.0000000180025095e-35
CHUNK_ROWS = 65_536
# LightGBM 4.1–4.5 CPU-s per million rows, the library 1.1–1.3 after a 2–3 CPU-s build: below about a
# million rows a build costs more than it saves
COMPILE_MIN_ROWS = 1_000_000


class CompiledModel:
    """Probabilities from the compiled library: called with a rows × features matrix in the model's
    feature order (float32 or float64, C- or F-ordered, NaN = missing), returns float64 of length rows.

    Raises:
        ModelError: the matrix has the wrong shape, or the library refuses it.
    """

    def __init__(self, predictor: Any, booster: lgb.Booster, library: Path) -> None:
        self._predictor, self.n_features, self.library = predictor, booster.num_feature(), library

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import tl2cgen

        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelError(f"compiled model expects rows × {self.n_features} features, got shape {x.shape}")
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        out = np.empty(len(x), dtype="float64")
        try:
            for start in range(0, len(x), CHUNK_ROWS):
                # a row-major copy (what DMatrix reads; the planner's matrices are column-major) of a
                # cache-sized block
                block = self._map_missing(np.array(x[start:start + CHUNK_ROWS], dtype=dtype, order="C"))
                scores = self._predictor.predict(tl2cgen.DMatrix(block))
                out[start:start + len(block)] = np.asarray(scores).reshape(len(block))
        except (tl2cgen.TL2cgenError, ValueError) as exc:
            raise ModelError(f"compiled model {self.library.name} failed to predict: {exc}") from exc
        return out

    @staticmethod
    def _map_missing(block: np.ndarray) -> np.ndarray:
        """``block`` (in place) as LightGBM reads it: any |value| ≤ 1e-35 is 0 to LightGBM (a sparse
        zero), where the generated code would compare the value itself."""
        np.putmask(block, np.abs(block) <= ZERO_BAND, 0)
        return block


class CompiledScorer:
    """``model.predict_matrix`` through its compiled library: the same probabilities, a third of the CPU."""

    def __init__(self, model: TrainedModel, compiled: CompiledModel) -> None:
        self.model, self.compiled = model, compiled

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """As :meth:`TrainedModel.predict_matrix` (columns named ``columns``, taken in the model's order)."""
        x = self.model.in_model_order(x, columns)
        return self.compiled(x) if len(x) else np.zeros(0, dtype="float64")


def fastest_scorer(model: TrainedModel, rows: int, threads: int | None = None) -> TrainedModel | CompiledScorer:
    """What should score about ``rows`` rows of ``model``: its compiled library, or the model itself.

    The library is used when it is already cached, and built (a few CPU-seconds) only for at least
    :data:`COMPILE_MIN_ROWS` rows, where the build pays for itself; the model when neither holds or
    :func:`compiled_predictor` cannot build one.
    """
    if rows <= 0:
        return model
    compiled = compiled_predictor(model, threads, build=rows >= COMPILE_MIN_ROWS)
    return model if compiled is None else CompiledScorer(model, compiled)


def compiled_predictor(model: TrainedModel, threads: int | None = None, *,
                       build: bool = True) -> Callable[[np.ndarray], np.ndarray] | None:
    """The compiled form of ``model``'s booster, built once and then reused from its cache.

    Args:
        model: a loaded model; its folder receives ``compiled/<tag>.<digest>.so`` (owner-only, written
            atomically; when the folder is read-only the library is built in a temporary folder and not kept).
        threads: prediction (and compile) threads; every core when None.
        build: build the library when none is cached; when False, only a cached one is used.

    Returns:
        A :class:`CompiledModel` (rows × features matrix in ``model.features`` order → float64
        probabilities equal to ``model.booster.predict``), or None when tl2cgen or a C compiler is
        missing, the build fails, or its output differs from LightGBM's — the reason is logged once.
    """
    threads = threads or os.cpu_count() or 1
    if not build and not any((Path(model.path) / CACHE_DIR).glob("*.so")):
        return None
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        log.info("%s/%s not compiled (LightGBM predicts): %s; install the 'fast' extra", model.name,
                 model.version, exc)
        return None
    compiler = _find_compiler()
    if compiler is None:
        log.warning("%s/%s not compiled (LightGBM predicts): no C compiler (gcc, cc or clang; or $CC) on PATH",
                    model.name, model.version)
        return None
    booster = model.booster
    nodes = _split_nodes(booster)  # the model's JSON dump, read once for both checks
    zero = _zero_as_missing(nodes)
    if zero:
        log.warning("%s/%s not compiled (LightGBM predicts): zero-as-missing splits on feature(s) %s, "
                    "which tl2cgen does not reproduce", model.name, model.version, zero)
        return None
    text = booster.model_to_string()
    tag = f"{sys.platform}-{platform.machine()}-tl2cgen{tl2cgen.__version__}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    try:
        with _quiet():
            compiled = _cached_or_built(model, booster, tag, compiler, threads, treelite, tl2cgen, build)
            if compiled is None:
                return None
            worst = _max_difference(booster, compiled, nodes)
    except Exception as exc:  # any failure of the optional path means: LightGBM predicts
        log.warning("%s/%s not compiled (LightGBM predicts): %s: %s", model.name, model.version,
                    type(exc).__name__, exc)
        return None
    if not worst <= TOLERANCE:
        log.warning("%s/%s compiled library refused (LightGBM predicts): differs from booster.predict by %.3g",
                    model.name, model.version, worst)
        return None
    log.info("%s/%s scores with compiled library %s (%d threads)", model.name, model.version,
             compiled.library, threads)
    return compiled


def _find_compiler() -> str | None:
    """The C compiler to build with: ``$CC`` when set and found, else the first of gcc, cc, clang."""
    names = [os.environ["CC"].split()[0]] if os.environ.get("CC", "").strip() else []
    for name in [*names, *_COMPILERS]:
        found = shutil.which(name)
        if found:
            return found
    return None


def _cached_or_built(model: TrainedModel, booster: lgb.Booster, tag: str, compiler: str, threads: int,
                     treelite: Any, tl2cgen: Any, build: bool = True) -> CompiledModel | None:
    """Load ``compiled/<tag>.<digest>.so`` when present, intact and loadable; otherwise build it
    (atomically) and load it, or return None when ``build`` is False."""
    folder = Path(model.path) / CACHE_DIR
    for library in sorted(folder.glob(f"{tag}.*.so")):
        try:
            intact = library.suffixes[-2:-1] == [f".{_digest(library)}"]
        except OSError as exc:
            log.warning("cached %s unloadable (%s); ignored", library, exc)
            continue
        if not intact:
            # checked before dlopen: a truncated library would crash the process, not raise
            log.warning("cached %s unloadable (damaged or partly copied: its content does not match the digest "
                        "in its name); removed", library)
            with contextlib.suppress(OSError):
                library.unlink()
            continue
        try:
            return CompiledModel(tl2cgen.Predictor(str(library), nthread=threads), booster, library)
        except (tl2cgen.TL2cgenError, OSError) as exc:
            log.warning("cached %s unloadable (%s); ignored", library, exc)
    if not build:
        return None
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        return _build(booster, folder, tag, compiler, threads, treelite, tl2cgen)
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
        # a read-only models folder (permissions or a read-only mount): build for this process only
        with tempfile.TemporaryDirectory(prefix="pushwise-compiled-") as tmp:
            return _build(booster, Path(tmp), tag, compiler, threads, treelite, tl2cgen)


def _digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def _build(booster: lgb.Booster, folder: Path, tag: str, compiler: str, threads: int,
           treelite: Any, tl2cgen: Any) -> CompiledModel:
    """Generate C for the trees, compile it into ``<folder>/<tag>.<digest>.so`` (via a temporary name, then
    rename) and load it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{tag}.", suffix=".so", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tl2cgen.export_lib(treelite.frontend.from_lightgbm(booster), toolchain=compiler, libpath=str(tmp),
                           params={"parallel_comp": SOURCE_FILES}, nthread=threads, options=list(COMPILER_OPTIONS))
        tmp.chmod(0o700)
        # a dot, not a dash, before the digest: log filters mask runs of 32+ token characters as secrets
        library = folder / f"{tag}.{_digest(tmp)}.so"
        os.replace(tmp, library)
    finally:
        tmp.unlink(missing_ok=True)
    # loaded after the rename: on Linux a library stays mapped even if its folder is removed later
    return CompiledModel(tl2cgen.Predictor(str(library), nthread=threads), booster, library)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow tl2cgen's chatter: its native log lines are Python ``print`` calls, its notices warnings."""
    with contextlib.redirect_stdout(io.StringIO()) as out, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for line in out.getvalue().splitlines() + [str(w.message) for w in caught]:
        log.debug("tl2cgen: %s", line)


def _max_difference(booster: lgb.Booster, compiled: CompiledModel, nodes: list[dict[str, Any]]) -> float:
    """Largest |compiled − booster.predict| over :func:`probe_rows`, as float32 (C and F order) and float64."""
    x = probe_rows(booster, nodes=nodes)
    expected = booster.predict(x.astype(np.float64), num_threads=1)
    worst = 0.0
    for variant in (x, np.asfortranarray(x), x.astype(np.float64)):
        got = compiled(variant)
        if got.shape != expected.shape or not np.isfinite(got).all():
            return float("inf")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def probe_rows(booster: lgb.Booster, n: int = PROBE_ROWS, seed: int = 0,
               nodes: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Float32 rows that send every split both ways and exercise missing values.

    Each feature's column is drawn from: each of its thresholds in float32 and the float32 neighbours
    on either side, NaN, ±0, ±1e-36 and ±1e-35 (LightGBM's "zero" band and its edge), and values
    beyond the extreme thresholds. The first rows are all-NaN, all-zero and all-1e-36 rows.
    Categorical splits are not probed (the click model has none). ``nodes``: the booster's
    :func:`_split_nodes`, when the caller has them already.
    """
    rng = np.random.default_rng(seed)
    thresholds = _thresholds(_split_nodes(booster) if nodes is None else nodes)
    x = np.empty((n, booster.num_feature()), dtype=np.float32)
    band = np.float32(ZERO_BAND)
    special = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, band, -band, np.nextafter(band, np.float32(1)),
                        -np.nextafter(band, np.float32(1))], dtype=np.float32)
    for j in range(x.shape[1]):
        # LightGBM writes some thresholds as ±1e300: beyond float32, every float32 is on one side
        t = np.array([v for v in sorted(thresholds.get(j, ())) if abs(v) < 1e38], dtype=np.float32)
        inf = np.float32(np.inf)
        near = np.concatenate([t, np.nextafter(t, inf), np.nextafter(t, -inf)])
        edges = [t.min() - 1, t.max() + 1, -3e38, 3e38] if len(t) else [-1.0, 1.0, -3e38, 3e38]
        pool = np.concatenate([near, special, np.asarray(edges, dtype=np.float32)])
        x[:, j] = rng.choice(pool, size=n)
    x[0], x[1], x[2] = np.nan, 0.0, 1e-36
    return x


def _zero_as_missing(nodes: list[dict[str, Any]]) -> list[int]:
    """Features whose splits (``nodes``) send 0 the default way (LightGBM's ``zero_as_missing``): the
    generated code compares 0 like any value and sends NaN where 0 goes, so it cannot reproduce them."""
    return sorted({int(node["split_feature"]) for node in nodes if node.get("missing_type") == "Zero"})


def _split_nodes(booster: lgb.Booster) -> list[dict[str, Any]]:
    """Every split node of every tree of ``booster``, from its JSON dump (about 50 ms for the click model)."""
    stack = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    out = []
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack += [node["left_child"], node["right_child"]]
    return out


def _thresholds(nodes: list[dict[str, Any]]) -> dict[int, set[float]]:
    """Feature index → the thresholds of the numeric splits among ``nodes``."""
    out: dict[int, set[float]] = {}
    for node in nodes:
        if node.get("decision_type") == "<=":
            out.setdefault(int(node["split_feature"]), set()).add(float(node["threshold"]))
    return out
