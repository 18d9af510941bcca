"""``prepare`` (Kaggle layout -> shards) and ``predict`` (a Kaggle submission)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hpa_tune.cli._common import progress_bar
from hpa_tune.errors import HpaTuneError
from hpa_tune.storage import filesystems as storage


def _sizes(_: Any, __: Any, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers like 64,224, got {value!r}"
        ) from None
    if not sizes or any(s < 16 for s in sizes):
        raise click.BadParameter(f"expected sizes >= 16, got {value!r}")
    return sizes


@click.command()
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    help="Output for shards: a directory, s3://... or gs://... (replaced).",
)
@click.option(
    "--sizes",
    default="64,224",
    callback=_sizes,
    show_default=True,
    help="Image sizes to prepare (px).",
)
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--holdout-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=0, type=int, help="Decoding processes (default: one per CPU).")
@click.option(
    "--shard-mb", default=256, show_default=True, type=int, help="Size limit of one shard (MiB)."
)
@click.option("--strict", is_flag=True, help="Fail, listing them, if any sample is rejected.")
def prepare(
    raw_dir: Path,
    out_dir: str,
    sizes: tuple[int, ...],
    val_fraction: float,
    holdout_fraction: float,
    seed: int,
    workers: int,
    shard_mb: int,
    strict: bool,
) -> None:
    """Turn a Kaggle-layout directory into Parquet shards, a manifest and stratified splits.

    \b
    RAW_DIR holds train.csv (Id,Target) and train/{Id}_{red,green,blue,yellow}.png
    (.tif/.jpg accepted), optionally sample_submission.csv and test/.
    \b
    Examples:
      hpa-tune prepare ~/kaggle/hpa --out ~/hpa-shards --sizes 64,224
      hpa-tune prepare ~/kaggle/hpa --out s3://bucket/hpa-shards --sizes 224,512
    """
    from hpa_tune.data.prepare import PrepareOptions
    from hpa_tune.data.publish import prepare_to

    options = PrepareOptions(
        sizes=sizes,
        val_fraction=val_fraction,
        holdout_fraction=holdout_fraction,
        seed=seed,
        workers=workers,
        strict=strict,
        shard_bytes=shard_mb * 2**20,
    )
    # No bar before decoding starts (a refused input prints one line only), and an error erases
    # it: the error is then one line.
    bar, update = progress_bar("decoding")
    prepared = False
    try:
        result = prepare_to(raw_dir, out_dir, options, progress=update)
        prepared = True
    except ValueError as err:
        raise HpaTuneError(str(err)) from None
    finally:
        bar.close(keep=prepared)
    m = result.manifest
    click.echo("splits: " + ", ".join(f"{k} {v}" for k, v in m.splits.items()))
    click.echo(
        f"rejected: {m.rejected}"
        + (f" ({m.extra['rejected_by_reason']})" if m.rejected else "")
        + f", see {storage.join(out_dir, 'rejected.csv')}"
    )
    click.echo(f"resized (not {options.expected_size}x{options.expected_size}): {m.resized}")
    click.echo(f"wrote {len(m.shards)} shard(s) and manifest.json to {out_dir}")


@click.command()
@click.argument("model_dir")
@click.option(
    "--data",
    "data_dir",
    required=True,
    help="Prepared shards (test split; a directory, s3://... or gs://...) or a raw Kaggle "
    "directory (test/ + sample_submission.csv).",
)
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option(
    "--workers",
    default=0,
    type=int,
    help="Decoding processes for raw images (default: one per CPU).",
)
def predict(model_dir: str, data_dir: str, out_path: Path, workers: int) -> None:
    """Write a Kaggle submission (Id,Predicted) with a refit model (MODEL_DIR: EXPERIMENT/refit,
    a directory or on object storage).

    \b
    Examples:
      hpa-tune predict results/demo-*/refit --data ~/kaggle/hpa --out submission.csv
      hpa-tune predict s3://bucket/runs/NAME/refit --data s3://bucket/hpa-shards --out sub.csv
    """
    from hpa_tune.refit.predict import predict_submission
    from hpa_tune.storage.staging import local_experiment

    with local_experiment(model_dir, upload=False) as local_model:
        sub = predict_submission(local_model, data_dir, out_path, workers)
    if sub.unreadable:
        more = f" (and {len(sub.unreadable) - 10} more)" if len(sub.unreadable) > 10 else ""
        click.secho(
            f"warning: {len(sub.unreadable)} of {sub.rows} test Id(s) have no readable image "
            f"(unreadable, or rejected by prepare); their row predicts the train split's most "
            f"frequent class ({sub.fallback_class}): " + ", ".join(sub.unreadable[:10]) + more,
            fg="yellow",
            err=True,
        )
    click.echo(f"wrote {sub.rows} rows to {sub.path}")
