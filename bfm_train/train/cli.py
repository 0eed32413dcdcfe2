"""``bfm-train``: train the BFM system or a baseline from a YAML config, on one device or under torchrun."""

from __future__ import annotations

import json

import click
import yaml

from bfm_deploy.cli_options import bfm_command, quiet_option
from bfm_deploy.cli_support import one_line_errors

from .config import load_config, resolve_path

EPILOG = """\b
Examples:
  bfm-train --config configs/demo_mbf.yaml
  bfm-train --config configs/demo_mbf.yaml --set max_steps=200 --set optim.lr=0.01 --resume auto
  bfm-train --report work_dirs/demo_mbf          # report.json + report.png again from metrics.jsonl
  torchrun --nproc_per_node 4 -m bfm_train.train.cli --config configs/paper_r50_casia.yaml
"""


@bfm_command(epilog=EPILOG)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (defaults: the paper's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. optim.lr=0.01 (repeatable).")
@click.option("--resume", default=None, metavar="auto|PATH", help="Continue from the latest checkpoint of run_dir (auto) or a file.")
@click.option("--run-dir", default=None, help="Where checkpoints, metrics.jsonl and config.yaml go (overrides run_dir).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps (overrides max_steps).")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.option("--report", "reports", multiple=True, type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Write RUN_DIR/report.json and report.png from its metrics.jsonl and exit (repeatable).")
@quiet_option
@one_line_errors
def main(
    config_path: str | None,
    overrides: tuple[str, ...],
    resume: str | None,
    run_dir: str | None,
    max_steps: int | None,
    print_config: bool,
    reports: tuple[str, ...],
) -> None:
    """Train C, E_F and E_P (recipe bfm, Eq. 7) or an ArcFace baseline; write bfm-checkpoint/1 files."""
    if reports:
        from .report import write_report

        for run_dir in reports:
            for path in write_report(resolve_path(run_dir)):
                click.echo(f"wrote {path}", err=True)
        return
    extra = list(overrides)
    if resume is not None:
        extra.append(f"resume={resume}")
    if run_dir is not None:
        extra.append(f"run_dir={run_dir}")
    if max_steps is not None:
        extra.append(f"max_steps={max_steps}")
    config = load_config(config_path, extra)
    if print_config:
        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False), nl=False)
        return
    from .trainer import train  # torch and the models load only when training

    result = train(config)
    if result:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
