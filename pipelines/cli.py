"""The `peftsearch` command. Heavy libraries load inside commands, so --help is instant."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="peftsearch",
    help="Search PEFT configurations (LoRA, DoRA, IA3, LoHa/LoKr, prompt tuning...) for a "
    "model and a labelled dataset, and get the trade-off between accuracy, size and cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set search.n_trials=5 (repeatable)."),
]
StudyDir = Annotated[Path, typer.Argument(help="The study folder: <output_dir>/<study_name>.")]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and CI: don't squeeze tables into 80 columns
        console.width = max(console.width, 160)
    return console


def user_errors(command: F) -> F:
    """User mistakes print one line each (key or file first) and exit 2, no traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from peftsearch.errors import UserError

        try:
            return command(*args, **kwargs)
        except UserError as error:
            console = _console(stderr=True)
            for line in str(error).splitlines():
                console.print(f"[bold red]error:[/bold red] {line}", markup=True, soft_wrap=True)
            raise typer.Exit(code=UserError.exit_code) from None
        except KeyboardInterrupt:
            _console(stderr=True).print(
                "interrupted; finished trials are kept in the study storage"
            )
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path(
        "peftsearch.yaml"
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (it runs offline on the demo model and data)."""
    from importlib.resources import files

    from peftsearch.errors import UserError
    from peftsearch.results import atomic_write

    if path.exists() and not force:
        raise UserError("file exists", where=str(path), hint="pass --force to overwrite")
    atomic_write(path, files("peftsearch.pipelines").joinpath("starter.yaml").read_text())
    _console().print(f"Wrote {path}. Check it with: peftsearch validate {path}")


@app.command()
@user_errors
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML config file.")],
    set_: SetOption = None,
) -> None:
    """Check a config file and print it with every default filled in."""
    from peftsearch.config import load_config

    resolved = load_config(config, set_)
    console = _console()
    console.print(resolved.to_yaml(), markup=False)
    console.print(f"{config}: valid. Methods: {', '.join(resolved.space.methods)}.")


@app.command()
@user_errors
def run(
    config: Annotated[Path, typer.Argument(help="The YAML config file.")],
    set_: SetOption = None,
) -> None:
    """Run the search; re-running the same study name continues it."""
    from peftsearch.config import load_config

    _search(load_config(config, set_), resume=False)


@app.command()
@user_errors
def resume(study_dir: StudyDir, set_: SetOption = None) -> None:
    """Continue a study whose driver was killed: interrupted trials are re-queued."""
    from peftsearch.pipelines._build import load_study_config

    _search(load_study_config(study_dir, set_), resume=True)


@app.command()
@user_errors
def status(study_dir: StudyDir) -> None:
    """Progress of a study, read from its storage (works while a search runs elsewhere)."""
    from peftsearch.pipelines._build import load_study_config
    from peftsearch.results.progress import progress_from_study
    from peftsearch.search import load_existing_study

    config = load_study_config(study_dir)
    study = load_existing_study(config.search.study_name, config.storage_url)
    _console().print(progress_from_study(study, config.search.n_trials).line())


def _search(resolved: Any, *, resume: bool) -> None:
    from peftsearch.pipelines.run import run_search
    from peftsearch.results import front_table

    console = _console()
    outcome = run_search(resolved, console, resume=resume)
    front = [r for r in outcome.rows if r["trial"] in outcome.front]
    console.print(front_table(front, f"Pareto front: {len(front)} of {len(outcome.rows)} trials"))
    console.print(
        f"Done in {outcome.wall_seconds:.0f} s. Results: {outcome.study_dir} "
        "(pareto.csv, pareto.json, trials.csv, adapters/)\n"
        f"Export one: peftsearch export {outcome.study_dir} --trial N --out my-adapter"
    )


@app.command()
@user_errors
def export(
    study_dir: StudyDir,
    trial: Annotated[int, typer.Option(help="Trial number to export (see pareto.csv).")],
    out: Annotated[Path, typer.Option(help="Folder to write the adapter to.")],
    merge: Annotated[
        bool, typer.Option(help="Also write merged full weights to OUT/merged.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
) -> None:
    """Export one trial's adapter in PEFT format, with a model card and the labels."""
    from peftsearch.errors import UserError
    from peftsearch.pipelines._build import load_study_config
    from peftsearch.results import export_adapter, trial_rows
    from peftsearch.search import load_existing_study

    config = load_study_config(study_dir)
    study = load_existing_study(config.search.study_name, config.storage_url)
    rows = {r["trial"]: r for r in trial_rows(study)}
    if trial not in rows:
        raise UserError(
            f"trial {trial} is not in study {study.study_name!r} (it has {len(rows)})",
            where="--trial",
        )
    written = export_adapter(
        study_dir=study_dir, row=rows[trial], config=config, out=out, merge=merge, force=force
    )
    _console().print(f"Exported trial {trial} ({rows[trial]['method']}) to {written}")


def main() -> None:
    try:
        app()
    except SystemExit as exit_:
        sys.exit(exit_.code)


if __name__ == "__main__":
    main()
