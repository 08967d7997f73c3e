"""``irconvert binarize``: convert a model, and fine-tune it or continue its run.

The route (convert only, post-training, fine-tune, continue) is
:func:`irconvert.train.route.plan_route`'s; this module parses the options,
resolves the recipe, calls the library and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from irconvert.cli._common import console, err_console, user_errors
from irconvert.cli._training import run_training
from irconvert.cli.app import app
from irconvert.cli.options import Arch, NumClasses, Pretrained, Quiet, SkipBad, TrustPickle


@app.command()
def binarize(
    model: Annotated[str, typer.Argument(
        help="The full-precision model (checkpoint file, torchvision/timm/built-in name), "
        "a post-training model.pt or its folder (fine-tuning starts from its original), "
        "or a run directory to continue with --resume.")],
    data: Annotated[str | None, typer.Option(
        "--data", help="imagefolder:PATH, cifar10:PATH, cifar100:PATH, digits, or a folder.")]
    = None,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="Training recipe: a YAML file, or a shipped recipe's name from any "
        "directory ('irconvert recipes' lists them); defaults when omitted.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run directory to write (default: a new folder runs/NAME-1w1a/, "
        "-2, -3... when taken; required under torchrun). Without --data (or with --epochs "
        "0): where model.pt goes (a folder or a .pt path; default runs/NAME-1w1a/model.pt).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Without --data or with --epochs 0: replace an existing model.pt "
        "at --out.")] = False,
    arch: Arch = None,
    num_classes: NumClasses = None,
    pretrained: Pretrained = False,
    trust_pickle: TrustPickle = False,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=0, help="Override epochs (the ceiling, when the recipe has a "
        "budget_minutes). 0: post-training only (re-estimate BatchNorm on --data, evaluate, "
        "write model.pt; no fine-tuning).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Override steps.")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", min=0.1, help="Override budget_minutes: keep the epochs that fit in "
        "this many minutes (timed before the first step, checked after every epoch); epochs "
        "becomes a ceiling. --set budget_minutes=null: no budget.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override optimizer.lr.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Override batch_size (per process).")] = None,
    act_bits: Annotated[int | None, typer.Option(
        "--act-bits", help="Override binarize.act_bits: 1 (1W/1A) or 32 (1W/32A).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Override device: auto, cpu, cuda, cuda:N.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override seed.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Override workers (DataLoader processes).")] = None,
    amp: Annotated[str | None, typer.Option(
        "--amp", help="Override amp: none, bf16, fp16 (CUDA only).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Override any recipe field: --set distill.alpha=0.5 --set "
        "optimizer.lr=2e-3 (values parsed as YAML, as in a recipe; --set distill=null turns "
        "distillation off). Repeatable.")] = None,
    replace_classifier: Annotated[bool, typer.Option(
        "--replace-classifier", help="Train a new classifier when the model's class count "
        "differs from the data's.")] = False,
    download: Annotated[bool, typer.Option(
        "--download", help="Let torchvision download CIFAR into the --data path.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a run from its last.pt: give the run directory as MODEL "
        "(binarize RUN --resume), or the original MODEL with the run's --data and --out.")]
    = False,
    skip_bad_images: SkipBad = False,
    quiet: Quiet = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the conversion plan and the resolved recipe; train nothing.")]
    = False,
) -> None:
    """Binarize a trained model and fine-tune it with the IR-Net EDE schedule.

    Writes a run directory: config.yaml, run.yaml, last.pt, best.pt, metrics.jsonl
    and curves.png. Ctrl-C or SIGTERM saves last.pt first; --resume continues it
    exactly. Works under torchrun (one process per GPU).

    An unreadable image file (truncated, not an image) stops the run with its
    name; --skip-bad-images leaves such files out and counts them (in the log,
    metrics.jsonl and the summary). A run that fails before its first epoch
    ends removes what it wrote, so no folder with only config files is left; a
    later failure keeps last.pt and says how to --resume.

    Without --data: convert only, write a binarized model.pt (for export and
    a later fine-tuning; accuracy is near chance until then) and print the
    command that fine-tunes it. With --epochs 0: also re-estimate BatchNorm
    on --data and report the post-training accuracy.
    """
    # Long for its signature: typer reads the ~30 options from it. The body
    # parses, asks plan_route for the job, resolves the recipe and calls.
    from irconvert.config import TrainConfig
    from irconvert.config.recipe_file import apply_overrides, load_recipe
    from irconvert.outputs import CONFIG
    from irconvert.train.route import RouteError, plan_route
    from irconvert.train.run import binarize_and_train, resume_run

    # epochs stays out until the route is decided: 0 selects post-training
    # (it is not a valid recipe value).
    overrides = {"steps": steps, "budget_minutes": budget, "optimizer.lr": lr,
                 "batch_size": batch_size, "binarize.act_bits": act_bits, "device": device,
                 "seed": seed, "workers": workers, "amp": amp,
                 "data.bad_files": "skip" if skip_bad_images else None}
    set_values = _parse_sets(sets)  # taken as given: --set distill=null means null
    misfit: RouteError | None = None
    with user_errors():  # a run to continue that cannot be is a library error
        try:
            route = plan_route(model, data=data, epochs=epochs, out=out, resume=resume,
                               force=force, dry_run=dry_run)
        except RouteError as exc:
            misfit = exc
    if misfit is not None:  # options that do not fit: a usage error, as click's own
        raise typer.BadParameter(str(misfit), param_hint=misfit.option)
    post_training = route.post_training
    load: dict[str, Any] = {"arch": arch, "num_classes": num_classes,
                            "pretrained": pretrained, "trust_pickle": trust_pickle}
    with user_errors():
        if route.kind == "continue":
            base = load_recipe(recipe or Path(model) / CONFIG)
            config = apply_overrides(base, {**overrides, "epochs": epochs}, set_values)
            run_training(lambda: resume_run(model, overrides=config, quiet=quiet), quiet)
            return
        model, load, base = _original_of(model, load)
        if recipe is not None:
            base = load_recipe(recipe)
        elif base is None:
            base = _default_recipe(model, load, act_bits, announce=not post_training)
        config = apply_overrides(base or TrainConfig(), overrides, set_values)
        if post_training and not dry_run:
            from irconvert.cli._posttrain import run_post_training

            flags = _repeat_flags(load, recipe, overrides, sets, download)
            run_post_training(model, config, out, data, flags=flags, force=force,
                              download=download, **load)
            return
        if not post_training:  # only now: 0 is not a valid recipe value
            config = apply_overrides(config, {"epochs": epochs})
        if dry_run:
            _dry_run(model, config, **load)
            return
    assert data is not None
    if out is None:  # `binarize MODEL --data D` as the quick start has it
        from irconvert.outputs import default_run_dir

        out = default_run_dir(model, config.binarize.act_bits)
        err_console.print(f"[yellow]note:[/] no --out: the run goes to {escape(str(out))}/",
                          highlight=False, soft_wrap=True)
    run_training(lambda: binarize_and_train(
        model, data, config, out, replace_classifier=replace_classifier, download=download,
        resume=resume, quiet=quiet, **load), quiet)


def _parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``--set`` items as a dict (:func:`parse_sets`), bad ones as a usage error."""
    from irconvert.config.recipe_file import parse_sets
    from irconvert.errors import ConfigError

    try:
        return parse_sets(sets)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from None


def _default_recipe(model: str, load: dict[str, Any], act_bits: int | None,
                    announce: bool = True) -> Any:
    """The shipped recipe for a recognised architecture (None: the generic defaults)."""
    from irconvert.io import load_model
    from irconvert.train.defaults import default_recipe

    arch = load.get("arch") or load_model(model, **load).arch
    config, path = default_recipe(arch, act_bits or 1)
    if path is None:
        return None
    if announce:  # conversion without training needs no word about the training recipe
        mode = "1W/1A" if (act_bits or 1) == 1 else "1W/32A"
        err_console.print(f"[yellow]note:[/] no --recipe: using {escape(str(path))}, the "
                          f"shipped recipe for {arch} {mode}", highlight=False, soft_wrap=True)
    return config


def _original_of(model: str, load: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """A post-training checkpoint as MODEL stands for its original model and recipe.

    Fine-tuning starts from the full-precision weights (the teacher, the
    full-precision accuracy and ``--resume`` need them), so the checkpoint's
    ``origin`` is loaded instead; options given on the command line win.
    """
    from irconvert.train.posttrain import origin_of

    found = origin_of(model)
    if found is None:
        return model, load, None
    origin, recipe = found
    merged = {key: value if value not in (None, False) else origin.get(key, value)
              for key, value in load.items()}
    err_console.print(f"[yellow]note:[/] {escape(model)} is a post-training conversion; "
                      f"starting from its original model {escape(str(origin['model']))}",
                      highlight=False, soft_wrap=True)
    return str(origin["model"]), merged, recipe


def _repeat_flags(load: dict[str, Any], recipe: Path | None, overrides: dict[str, Any],
                  sets: list[str] | None, download: bool) -> list[str]:
    """The options a fine-tuning command needs to do what this one did."""
    flags: list[str] = []
    for key, value in load.items():
        if isinstance(value, bool):
            flags += [f"--{key.replace('_', '-')}"] if value else []
        elif value is not None:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    if recipe is not None:
        flags += ["--recipe", str(recipe)]
    named = {"binarize.act_bits": "--act-bits", "batch_size": "--batch-size",
             "device": "--device", "seed": "--seed", "workers": "--workers", "amp": "--amp"}
    for key, flag in named.items():
        if overrides.get(key) is not None:
            flags += [flag, str(overrides[key])]
    for item in sets or []:
        flags += ["--set", item]
    return flags + (["--download"] if download else [])


def _dry_run(model: str, config: Any, *, arch: str | None, num_classes: int | None,
             pretrained: bool, trust_pickle: bool) -> None:
    import yaml

    from irconvert.cli.inspect_cmd import render_report
    from irconvert.convert import plan
    from irconvert.io import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, pretrained=pretrained,
                        trust_pickle=trust_pickle)
    render_report(plan(loaded.model, config.binarize), f"{model} ({loaded.arch})")
    console.print("[bold]recipe[/]")
    # soft_wrap: a long YAML line wrapped at 80 columns would no longer be YAML.
    console.print(yaml.safe_dump(config.to_dict(), sort_keys=False), highlight=False,
                  soft_wrap=True, markup=False)
