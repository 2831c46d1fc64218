"""The `peftsearch` command. Heavy libraries load inside commands, so --help is instant."""

from __future__ import annotations

import gc
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
MaxParams = Annotated[
    str | None,
    typer.Option("--max-params", help="At most this many trainable params: 1% or 200000."),
]
MaxCost = Annotated[str | None, typer.Option("--max-cost", help="At most this cost per run: 5usd.")]
MaxMemory = Annotated[
    str | None, typer.Option("--max-memory", help="At most this peak memory per trial: 12gb.")
]
MinAccuracy = Annotated[
    float | None, typer.Option("--min-accuracy", help="At least this accuracy.")
]
Prefer = Annotated[
    str,
    typer.Option(
        "--prefer", help="accuracy, or the smallest (params) or cheapest (cost) near the best."
    ),
]

AdapterFolder = Annotated[Path, typer.Argument(help="An exported adapter folder.")]
TrackingUri = Annotated[
    str | None, typer.Option(help="The MLflow store of --registry (default: the study's).")
]


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
                "interrupted: finished trials are kept; continue with `peftsearch resume STUDY_DIR`"
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
    example: Annotated[
        str,
        typer.Option(
            help="classifier: MiniLM sorts reviews; llm: SmolLM2 learns an instruction task."
        ),
    ] = "classifier",
) -> None:
    """Write a commented starter config (it runs offline on the demo model and data)."""
    from importlib.resources import files

    from peftsearch.errors import UserError
    from peftsearch.results import atomic_write

    examples = {"classifier": "starter.yaml", "llm": "llm_example.yaml"}
    if example not in examples:
        raise UserError(
            f"unknown example {example!r}", where="--example", hint="use classifier or llm"
        )
    if path.exists() and not force:
        raise UserError("file exists", where=str(path), hint="pass --force to overwrite")
    atomic_write(path, files("peftsearch.pipelines").joinpath(examples[example]).read_text())
    _console().print(f"Wrote {path}. Check it with: peftsearch validate {path}")


@app.command()
@user_errors
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML config file.")],
    set_: SetOption = None,
) -> None:
    """Check a config file and print it with every default filled in."""
    from peftsearch.config import load_config
    from peftsearch.spaces._deployment import profile_words

    resolved = load_config(config, set_)
    console = _console()
    console.print(resolved.to_yaml(), markup=False)
    methods, removals = resolved.constrained_space()
    console.print(f"{config}: valid. Methods: {', '.join(methods)}.", markup=False)
    if removals:
        deployment = resolved.deployment
        names = " and ".join(profile_words(t, deployment.max_lora_rank) for t in deployment.targets)
        console.print(f"Deployment to {names} removes from the space:", markup=False)
        for removal in removals:
            console.print(f"  {removal.line()}", markup=False)


@app.command()
@user_errors
def run(
    config: Annotated[Path, typer.Argument(help="The YAML config file.")],
    set_: SetOption = None,
) -> None:
    """Run the search; re-running the same study name continues it."""
    from peftsearch.config import load_config
    from peftsearch.pipelines.api import run as run_study

    _summary(run_study(load_config(config, set_), console=_console()))


@app.command()
@user_errors
def resume(study_dir: StudyDir, set_: SetOption = None) -> None:
    """Continue a study whose driver was killed: interrupted trials are re-queued."""
    from peftsearch.pipelines.api import resume as resume_study

    _summary(resume_study(study_dir, set_, console=_console()))


@app.command()
@user_errors
def status(study_dir: StudyDir) -> None:
    """Progress of a study, read from its storage (works while a search runs elsewhere)."""
    from peftsearch.pipelines.studies import load_study_config
    from peftsearch.results.progress import progress_from_study
    from peftsearch.search import load_existing_study

    config = load_study_config(study_dir)
    study = load_existing_study(config.search.study_name, config.storage_url)
    from peftsearch.pipelines.run import explain_best

    console = _console()
    console.print(progress_from_study(study, config.search.n_trials).line())
    explain_best(study, console)


def _summary(result: Any) -> None:
    from peftsearch.results import front_table, front_title

    console = _console()
    front = [r for r in result.rows if r["trial"] in result.front_numbers]
    console.print(front_table(front, front_title(result.rows, len(front))))
    if not front and any(r["status"] == "COMPLETE" for r in result.rows):
        console.print(result.recommend().text, markup=False)  # nothing beats no adapter
    console.print(
        f"Results: {result.study_dir} (pareto.csv, pareto.json, trials.csv, adapters/, "
        "report.html)\n"
        f"Export one: peftsearch export {result.study_dir} --trial N --out my-adapter\n"
        f"Browse every trial: optuna-dashboard {result.config.storage_url}",
        markup=False,
    )


@app.command()
@user_errors
def recommend(
    study_dir: StudyDir,
    max_params: MaxParams = None,
    max_cost: MaxCost = None,
    min_accuracy: MinAccuracy = None,
    prefer: Prefer = "accuracy",
    max_memory: MaxMemory = None,
    json_: Annotated[bool, typer.Option("--json", help="Print it as JSON, for scripts.")] = False,
) -> None:
    """Say which adapter to take under your constraints, and what it trades away."""
    import json

    from peftsearch.pipelines.api import load

    advice = load(study_dir).recommend(
        max_params=max_params,
        max_cost=max_cost,
        min_accuracy=min_accuracy,
        prefer=prefer,
        max_memory=max_memory,
    )
    if json_:
        print(json.dumps(advice.to_dict(), indent=2, default=str))
        return
    console = _console()
    console.print(advice.text, markup=False)
    for line in advice.alternatives:
        console.print(f"  also: {line}", markup=False)


@app.command()
@user_errors
def report(
    study_dir: StudyDir,
    out: Annotated[
        Path | None, typer.Option(help="Where to write it (default STUDY/report.html).")
    ] = None,
) -> None:
    """Write the self-contained HTML report of a study (plots, recommendation, trials)."""
    from peftsearch.pipelines.api import load

    path = load(study_dir).report(out)
    _console().print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in any browser.")


@app.command()
@user_errors
def export(
    study_dir: StudyDir,
    out: Annotated[Path | None, typer.Option(help="Folder to write the adapter to.")] = None,
    trial: Annotated[
        int | None, typer.Option(help="Trial number to export (see pareto.csv).")
    ] = None,
    pick: Annotated[
        str | None, typer.Option(help="'recommended': the trial `recommend` picks, with its flags.")
    ] = None,
    max_params: MaxParams = None,
    max_cost: MaxCost = None,
    min_accuracy: MinAccuracy = None,
    prefer: Prefer = "accuracy",
    max_memory: MaxMemory = None,
    merge: Annotated[
        bool, typer.Option(help="Also write merged full weights to OUT/merged.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
    register: Annotated[
        str | None,
        typer.Option(help="Also register it under this name in the MLflow Model Registry."),
    ] = None,
    check: Annotated[
        str | None,
        typer.Option(
            help="vllm or merge: say in one line whether the trial's adapter fits that "
            "deployment, and why not (exit 1); writes nothing unless --out is given too."
        ),
    ] = None,
    max_lora_rank: Annotated[
        int | None,
        typer.Option(help="vLLM's --max-lora-rank for --check vllm (default: the study's, or 16)."),
    ] = None,
) -> None:
    """Export one trial's adapter in PEFT format, with a model card and the labels."""
    from peftsearch.pipelines.api import load

    study = load(study_dir)
    limits = {
        "max_params": max_params,
        "max_cost": max_cost,
        "min_accuracy": min_accuracy,
        "prefer": prefer,
        "max_memory": max_memory,
    }
    number = study.pick_trial(trial=trial, pick=pick, **limits)
    if check is not None:
        from peftsearch.spaces._deployment import profile_words

        reason = study.check_deployment(number, check, max_lora_rank)
        rank = max_lora_rank or study.config.deployment.max_lora_rank
        where = profile_words(check, rank)
        if reason is not None:
            _console().print(f"Trial {number} does not fit {where}: {reason}.", markup=False)
            raise typer.Exit(1)
        _console().print(f"Trial {number} fits {where}.", markup=False)
        if out is None:
            return
    if out is None:
        from peftsearch.errors import UserError

        raise UserError("say where to write the adapter", where="export", hint="pass --out DIR")
    written = study.export(out, trial=number, merge=merge, force=force, register=register)
    row = next(r for r in study.rows if r["trial"] == number)
    _console().print(f"Exported trial {number} ({row['method']}) to {written}")
    quantization = row.get("quantization") or "none"
    if merge and quantization != "none":
        _console().print(
            f"Merged into the de-quantized {quantization} base weights (what the adapter "
            "trained on), saved in float32: not the checkpoint's original weights."
        )
    if register:
        _console().print(f"Registered it in MLflow as model {register!r}.")


@app.command()
@user_errors
def verify(
    folder: AdapterFolder,
    registry: Annotated[
        str | None,
        typer.Option(help="NAME or NAME/VERSION: check against that registered version."),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(help="The base model revision it is to be deployed on."),
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Check an exported adapter against what its export (or registry version) recorded:
    one line, exit 0 when it matches, 1 when it does not."""
    from peftsearch.pipelines.api import verify as verify_folder

    checked = verify_folder(folder, registry=registry, revision=revision, tracking_uri=tracking_uri)
    _console().print(checked.line(), markup=False, soft_wrap=True)
    if not checked.ok:
        raise typer.Exit(1)


@app.command()
@user_errors
def evaluate(
    folder: AdapterFolder,
    data: Annotated[Path, typer.Option(help="New labelled data, in the search's format.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    registry: Annotated[
        str | None,
        typer.Option(help="NAME or NAME/VERSION: log the review to that registered version."),
    ] = None,
    tracking_uri: TrackingUri = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score an exported adapter on new labelled data as the search scored it, beside its
    recorded scores and the base model without it, with a verdict on drift."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from peftsearch.pipelines.api import evaluate as evaluate_adapter
    from peftsearch.results.review import review_lines

    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} row passes"),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=json_output,
    ) as bar:
        task = bar.add_task("scoring", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = evaluate_adapter(
            folder,
            data,
            device=device,
            registry=registry,
            tracking_uri=tracking_uri,
            progress=advance,
        )
    if json_output:
        print(json.dumps(result, default=str))
        return
    for line in review_lines(result):
        _console().print(line, markup=False, soft_wrap=True)
    if result.get("logged"):
        logged = result["logged"]
        _console().print(
            f"logged to MLflow: model {logged['model']!r} version {logged['version']}, "
            f"run {logged['run_id']}",
            markup=False,
        )


def main() -> None:
    try:
        app()
    except SystemExit as exit_:
        sys.exit(exit_.code)
    finally:
        # The process ends next. Python's shutdown would run full garbage collections
        # over every object torch, transformers, MLflow and Ray made: 2 to 3.5 s after
        # a search (benchmarks/overhead.py), for memory the OS takes back anyway. Frozen
        # objects are left out of them; atexit handlers and refcount finalizers still run.
        gc.freeze()


if __name__ == "__main__":
    main()
