"""`egocurate lam …`: train a latent action model on the catalog's clips, convert checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from egocurate.cli.options import console, fail, load_yaml_config, ray_train_summary, start_ray_for_training

app = typer.Typer(
    help="Latent action models: train on the catalog's clips, convert checkpoints.", no_args_is_help=True
)


def load_train_config(path: Path | None, overrides: dict | None = None):
    """A TrainConfig from YAML (its keys are TrainConfig fields), with command-line overrides."""
    from egocurate.actions.train import TrainConfig

    return load_yaml_config(path, overrides, TrainConfig, "training options")


@app.command("train")
def train_command(
    catalog: Annotated[
        str, typer.Option("--catalog", "-c", envvar="EGOCURATE_CATALOG", help="Catalog root.")
    ],
    config: Annotated[Path | None, typer.Option("--config", help="YAML of TrainConfig options.")] = None,
    checkpoint_dir: Annotated[str | None, typer.Option(help="Overrides checkpoint_dir.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Overrides max_steps.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Overrides max_seconds.")] = None,
    ray_workers: Annotated[
        int, typer.Option(help="Train on this many Ray Train workers (0: this process).")
    ] = 0,
    where: Annotated[
        str | None, typer.Option(help="SQL filter on the clip rows, e.g. \"split = 'train'\".")
    ] = None,
) -> None:
    """Train a LAM on the catalog's clips (resumes from the newest checkpoint). Under `torchrun`, every
    rank runs this command and trains on its own shard of clips."""
    from egocurate.actions.train import train, train_with_ray
    from egocurate.catalog.store import Catalog
    from egocurate.jobs.inputs import clips

    cfg = load_train_config(
        config, {"checkpoint_dir": checkpoint_dir, "max_steps": max_steps, "max_seconds": max_seconds}
    )
    rows = clips(Catalog(catalog, create=False))
    if where:
        import duckdb

        from egocurate.catalog.query import READ_ONLY_CONFIG

        con = duckdb.connect(config=READ_ONLY_CONFIG)  # --where reads `rows`; it never writes a file
        con.register("rows", rows)
        try:
            rows = con.sql(f"SELECT * FROM rows WHERE {where}").to_arrow_table()
        except duckdb.Error as exc:
            fail(f"--where: {exc}")
        finally:
            con.close()
    rows = [r for r in rows.to_pylist() if r.get("uri")]
    if not rows:
        fail(f"no clips in {catalog}: run the ingest and clips stages first")
    console.print(f"training on {len(rows)} clips, checkpoints in [bold]{cfg.checkpoint_dir}[/]")
    if ray_workers:
        import torch

        start_ray_for_training(catalog)
        result = train_with_ray(rows, cfg, num_workers=ray_workers, use_gpu=torch.cuda.is_available())
        console.print(ray_train_summary(result, str(cfg.checkpoint_dir)))
        return
    _, result = train(rows, cfg)
    console.print_json(
        json.dumps(
            {
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "last_mse": result.last_mse,
                "checkpoint": result.checkpoint,
            }
        )
    )


@app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="A Lightning .ckpt (e.g. DreamDojo's LAM_400k.ckpt).")],
    target: Annotated[Path, typer.Argument(help="The .safetensors file to write.")],
    trust_checkpoint: Annotated[
        bool, typer.Option("--trust-checkpoint", help="Allow full unpickling (only for files you trust).")
    ] = False,
) -> None:
    """Convert a LAM checkpoint to safetensors once, so it never needs unpickling again."""
    from egocurate.actions.lam import CheckpointError, LatentActionModel

    try:
        model = LatentActionModel.from_checkpoint(source, trust_checkpoint=trust_checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))
    model.save_safetensors(target)
    console.print(f"wrote [bold]{target}[/] ({model.config})")
