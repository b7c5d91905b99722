"""``egocurate demo``: generated sample videos through the whole pipeline, shards and both exports."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from egocurate.catalog.store import Catalog
from egocurate.cli.options import EngineChoice, console
from egocurate.jobs.config import PipelineConfig, StageConfig
from egocurate.jobs.pipeline import run_pipeline


def demo_config(out: Path, engine: str | None = None) -> PipelineConfig:
    """The demo pipeline (packaged `configs/demo.yaml`) pointed at generated samples under `out`."""
    from egocurate.testing.videos import make_sample_set

    manifest = make_sample_set(out / "samples")
    raw = yaml.safe_load(resources.files("egocurate.configs").joinpath("demo.yaml").read_text())
    raw["catalog"] = str((out / "catalog").resolve())
    raw["sources"] = [str(manifest)]
    if engine:
        raw["engine"] = engine
        for stage in raw.get("stages", []):
            stage.pop("engine", None)
    raw["stages"] = [StageConfig.model_validate(s).model_dump() for s in raw.get("stages", [])]
    return PipelineConfig.model_validate(raw)


def demo(
    out: Annotated[Path, typer.Option(help="Where samples and the catalog go.")] = Path("demo_output"),
    engine: Annotated[EngineChoice | None, typer.Option(help="Run every stage on this engine.")] = None,
) -> None:
    """Generate sample egocentric videos (and one corrupt file) and run the demo pipeline on them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console.print("[bold]egocurate demo[/]: generating sample videos ...")
    config = demo_config(out, engine.value if engine else None)
    run_pipeline(config, console)
    cat = Catalog(config.catalog)
    exports = demo_exports(cat, out.resolve())
    summary = Table(title="catalog tables")
    summary.add_column("table")
    summary.add_column("rows", justify="right")
    summary.add_column("version", justify="right")
    for name in cat.tables():
        summary.add_row(name, str(cat.count(name)), str(cat.version(name)))
    console.print(summary)
    for name, where in exports.items():
        console.print(f"{name}: {where}")
    console.print(f"catalog: [bold]{cat.root}[/]")
    console.print(f'try: egocurate catalog sql --catalog {cat.root} "SELECT uri, error_kind FROM quarantine"')


def demo_exports(catalog: Catalog, out, progress: bool = False) -> dict[str, str]:
    """Shards, the DreamDojo MP4 tree and the LeRobot dataset of a demo catalog, under `out`.

    What ``egocurate demo`` runs after its pipeline; clips an export leaves out (too short, too slow)
    are reported, not fatal. Returns where each output went.
    """
    from pathlib import Path

    from egocurate.export.dreamdojo import export_dreamdojo
    from egocurate.export.lerobot import export_lerobot
    from egocurate.shards.write import MB, ShardParams, write_shards

    out = Path(out)
    shards = write_shards(
        catalog, str(out / "shards"), params=ShardParams(target_bytes=64 * MB, row_group_bytes=8 * MB),
        progress=progress,
    )  # fmt: skip
    dreamdojo = export_dreamdojo(catalog, str(out / "dreamdojo_export"), progress=progress)
    lerobot = export_lerobot(catalog, str(out / "lerobot_export"), progress=progress)
    return {
        "shards": shards.manifest_url,
        "dreamdojo": f"{dreamdojo.out} ({dreamdojo.written} clips, {len(dreamdojo.skipped)} left out)",
        "lerobot": f"{lerobot.out} ({lerobot.written} episodes)",
    }
