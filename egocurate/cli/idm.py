"""`egocurate idm …`: train an inverse dynamics model on the catalog's robot episodes, label clips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from egocurate.cli.options import console, fail, load_yaml_config, ray_train_summary, start_ray_for_training

app = typer.Typer(
    help="Inverse dynamics models: train on episodes with real actions, label clips with pseudo-actions.",
    no_args_is_help=True,
)


def load_idm_config(path: Path | None, overrides: dict | None = None):
    """An IDMTrainConfig from YAML (its keys are IDMTrainConfig fields), with command-line overrides."""
    from egocurate.actions.idm_train import IDMTrainConfig

    return load_yaml_config(path, overrides, IDMTrainConfig, "IDM training options")


@app.command("train")
def train_command(
    catalog: Annotated[
        str, typer.Option("--catalog", "-c", envvar="EGOCURATE_CATALOG", help="Catalog root.")
    ],
    config: Annotated[Path | None, typer.Option("--config", help="YAML of IDM training options.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Checkpoint folder (overrides out_dir).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Overrides max_steps.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Overrides max_seconds.")] = None,
    ray_workers: Annotated[
        int, typer.Option(help="Train on this many Ray Train workers (0: this process).")
    ] = 0,
) -> None:
    """Train an IDM on every episode with real actions (`episode_actions` joined with `videos`).

    Writes `<out>/<name>.safetensors` and `<out>/<name>.json` (config, action names, normalisation)."""
    from egocurate.actions.idm_train import train_idm, train_with_ray
    from egocurate.catalog.store import Catalog
    from egocurate.jobs.inputs import idm_episodes

    cfg = load_idm_config(config, {"out_dir": out, "max_steps": max_steps, "max_seconds": max_seconds})
    rows = idm_episodes(Catalog(catalog, create=False))
    if not rows:
        fail(f"no episodes with real actions in {catalog}: ingest a robot dataset (episode_actions) first")
    console.print(f"training an IDM on {len(rows)} episodes, checkpoint in [bold]{cfg.out_dir}[/]")
    if ray_workers:
        import torch

        start_ray_for_training(catalog)
        result = train_with_ray(rows, cfg, num_workers=ray_workers, use_gpu=torch.cuda.is_available())
        console.print(ray_train_summary(result, str(Path(cfg.out_dir) / f"{cfg.name}.safetensors")))
        return
    try:
        _, result = train_idm(rows, cfg)
    except ValueError as exc:
        fail(str(exc))
    console.print_json(
        json.dumps(
            {
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "last_loss": result.last_loss,
                "checkpoint": result.checkpoint,
            }
        )
    )


@app.command("label")
def label_command(
    catalog: Annotated[
        str, typer.Option("--catalog", "-c", envvar="EGOCURATE_CATALOG", help="Catalog root.")
    ],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The IDM's .safetensors file.")],
    all_clips: Annotated[
        bool, typer.Option("--all", help="Label every clip, also those whose video has real actions.")
    ] = False,
    engine: Annotated[str, typer.Option(help="local, ray or spark.")] = "local",
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
) -> None:
    """Run the `idm_actions` stage: pseudo-actions for clips without real actions (or all, --all)."""
    from egocurate.actions.idm import load_idm
    from egocurate.catalog.store import Catalog
    from egocurate.jobs.driver import run_stage
    from egocurate.jobs.inputs import build_inputs
    from egocurate.jobs.pipeline import make_engine, print_summary
    from egocurate.jobs.registry import build_stage

    cat = Catalog(catalog, create=False)
    model = load_idm(checkpoint)  # a bad checkpoint fails here, once, before any work
    check_action_dims(cat, model.config.action_dim, checkpoint.name)
    stage = build_stage("idm_actions", {"checkpoint": str(checkpoint), "all": all_clips, "device": device})
    rows = build_inputs("idm_inputs", cat)
    runner = make_engine(engine)
    try:
        summary = run_stage(stage, rows, cat, runner)
    finally:
        runner.close()
    print_summary([summary], console)


def check_action_dims(catalog, action_dim: int, name: str) -> None:
    """Raise ActionDimError when the catalog's real actions have another dimension than the IDM's."""
    from egocurate.actions.idm import ActionDimError

    shapes = catalog.read("episode_actions", columns=["actions_shape"]).column("actions_shape").to_pylist()
    dims = sorted({int(s[1]) for s in shapes if s and len(s) == 2})
    if dims and dims != [action_dim]:
        raise ActionDimError(
            f"IDM checkpoint {name} predicts {action_dim} action dims, but the catalog's episodes have {dims}"
        )
