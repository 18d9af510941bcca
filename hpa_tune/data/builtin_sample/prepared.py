"""The built-in HPA-like sample: rendered, written in the Kaggle layout, prepared — once, then cached.

It goes through ``prepare`` exactly like real data. The cache lives in ``$HPA_TUNE_CACHE`` (default
``~/.cache/hpa-tune``) under a key of every setting that changes its content.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpa_tune.data.builtin_sample.render import write_kaggle_sample
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import MANIFEST_NAME
from hpa_tune.storage.cache import cache_root
from hpa_tune.storage.local_lock import exclusive_lock

SAMPLE_VERSION = 2


@dataclass(frozen=True)
class BuiltinSample:
    """Settings of the built-in sample (defaults: what ``hpa-tune run`` uses without ``--data``)."""

    n_train: int = 1400
    n_test: int = 120
    seed: int = 2018
    sizes: tuple[int, ...] = (32, 64)
    min_per_class: int = 20

    def key(self) -> str:
        """Cache directory name: changes whenever the content would."""
        sizes = "-".join(map(str, self.sizes))
        return f"sample-v{SAMPLE_VERSION}-n{self.n_train}-t{self.n_test}-s{self.seed}-m{self.min_per_class}-px{sizes}"


def cached_builtin_sample(sample: BuiltinSample = BuiltinSample()) -> Path | None:
    """The prepared shards of ``sample`` if already cached, else ``None``."""
    shards = cache_root() / sample.key() / "shards"
    return shards if (shards / MANIFEST_NAME).is_file() else None


def ensure_builtin_sample(
    sample: BuiltinSample = BuiltinSample(),
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Prepared shards of the built-in sample, rendering and preparing them on first use.

    Returns:
        The prepared directory (holds ``manifest.json``); its ``raw/`` sibling is the Kaggle layout.
    """
    cached = cached_builtin_sample(sample)
    if cached is not None:
        return cached
    root = cache_root() / sample.key()
    # One process renders; another that asks meanwhile (a second driver, a test worker) waits for
    # it and then finds the finished sample instead of deleting the first one's work in progress.
    with exclusive_lock(root.with_name(root.name + ".lock")):
        cached = cached_builtin_sample(sample)
        if cached is not None:
            return cached
        return _render_and_prepare(sample, root, progress, log)


def _render_and_prepare(
    sample: BuiltinSample,
    root: Path,
    progress: Callable[[int, int], None] | None,
    log: Callable[[str], None],
) -> Path:
    shards = root / "shards"
    raw = root / "raw"
    if not (raw / "train.csv").is_file():
        log(
            f"rendering the built-in HPA-like sample ({sample.n_train} train + {sample.n_test} test) into {raw}"
        )
        # Render beside, then rename: an interrupted render never passes for a finished one.
        tmp_raw = root / "raw.tmp"
        shutil.rmtree(tmp_raw, ignore_errors=True)
        write_kaggle_sample(
            tmp_raw,
            sample.n_train,
            sample.n_test,
            seed=sample.seed,
            min_per_class=sample.min_per_class,
        )
        shutil.rmtree(raw, ignore_errors=True)
        tmp_raw.rename(raw)
    log(f"preparing it like real data into {shards}")
    tmp = root / "shards.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    prepare(raw, tmp, PrepareOptions(sizes=sample.sizes, seed=sample.seed), progress=progress)
    tmp.rename(shards)
    return shards
