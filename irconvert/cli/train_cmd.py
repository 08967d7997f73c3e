"""``irconvert binarize``, ``eval`` and ``demo``: fine-tuning and measuring accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from irconvert.cli._common import console, err_console, human_bytes, print_json, user_errors
from irconvert.cli._tables import Column, print_table
from irconvert.cli.app import app
from irconvert.cli.options import Arch, NumClasses, Pretrained, TrustPickle

DataOpt = Annotated[str, typer.Option(
    "--data", help="imagefolder:PATH (train/ and val/ or test/ inside), cifar10:PATH, "
    "cifar100:PATH, digits, or a folder.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines, no progress bars.")]
SkipBad = Annotated[bool, typer.Option(
    "--skip-bad-images", help="Leave unreadable image files (truncated, not an image) out "
    "and count them, instead of stopping at the first one (recipe: data.bad_files).")]


def _float_list(value: str | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {value!r}",
                                 param_hint=name) from None


def _epochs_by_stage(history: list[dict[str, Any]], epochs: int) -> str:
    """``30`` for a plain recipe; ``10 activations + 20 both`` for a staged one."""
    counts: dict[str, int] = {}
    for row in history:
        key = f"{row.get('stage', '1')} ({row.get('binarize', 'both')})"
        counts[key] = counts.get(key, 0) + 1
    if len(counts) <= 1:
        return str(epochs)
    return f"{epochs}: " + " + ".join(f"{n} {key}" for key, n in counts.items())


def render_summary(result: Any, quiet: bool) -> None:
    """FP vs binary accuracy, sizes and wall time."""
    report = result.report
    final = result.final or {}
    nan = float("nan")
    fp = f"{result.fp_top1:.2f}%" if result.fp_top1 is not None else "n/a"
    rows = [
        ("full-precision top-1 (original)", fp),
        (f"binary top-1 (1W/{report['act_bits']}A, best)", f"{result.best_top1:.2f}%"),
        ("binary top-1 / top-5 (last epoch)",
         f"{final.get('val_top1', nan):.2f}% / {final.get('val_top5', nan):.2f}%"),
        ("binarized layers", f"{report['binarized_layers']} of {len(report['rows'])}"),
        ("fp32 size", human_bytes(report["fp32_bytes"])),
        ("size after packing", f"{human_bytes(report['packed_bytes'])} "
                               f"({report['compression']:.1f}x smaller)"),
        ("epochs", _epochs_by_stage(result.history, result.epochs) + (
            f" (of {result.epochs_ceiling}: what fit the time budget)"
            if getattr(result, "epochs_ceiling", None) else "")),
        *([("unreadable images skipped", f"{len(result.skipped)} (named in the log)")]
          if getattr(result, "skipped", None) else []),
        ("wall time", f"{result.wall_time:.1f} s"),
        ("run directory", str(result.run_dir)),
    ]
    if quiet:
        for key, value in rows:
            console.print(f"{key}: {value}", highlight=False, soft_wrap=True)
        return
    print_table(console, "irconvert summary",
                [Column("what"), Column("value", justify="right", wrap=True)],
                [(key, escape(value)) for key, value in rows], show_header=False)


def _run_training(call: Any, quiet: bool) -> None:
    from irconvert.train.outcome import TrainingInterrupted

    with user_errors():
        try:
            result = call()
        except TrainingInterrupted as exc:
            err_console.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None  # 130 Ctrl-C, 143 SIGTERM
    if result.run_dir is not None and _is_main():
        render_summary(result, quiet)


def _parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1}``, values read as YAML scalars or lists.

    Read like a recipe file, so ``lr=2e-3`` is a number there too (plain
    YAML 1.1 reads it as a string).
    """
    import yaml

    from irconvert.config.recipe_file import yaml_loader

    out: dict[str, Any] = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            out[key.strip()] = yaml.load(raw, Loader=yaml_loader())
        except yaml.YAMLError:
            raise typer.BadParameter(f"{item!r}: the value is not valid YAML",
                                     param_hint="--set") from None
    return out


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


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
        "--recipe", help="YAML training recipe (see recipes/); defaults when omitted.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run directory to write (not needed with --dry-run). Without --data "
        "(or with --epochs 0): where model.pt goes (a folder or a .pt path; default "
        "runs/NAME-1w1a/).")] = None,
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
    from irconvert.checkpoint import CONFIG, LAST, check_resumable, is_run_dir
    from irconvert.config import TrainConfig
    from irconvert.config.recipe_file import apply_overrides, load_recipe
    from irconvert.train.run import binarize_and_train, resume_run

    # epochs stays out until the route is decided: 0 selects post-training
    # (it is not a valid recipe value).
    overrides = {"steps": steps, "budget_minutes": budget, "optimizer.lr": lr,
                 "batch_size": batch_size, "binarize.act_bits": act_bits, "device": device,
                 "seed": seed, "workers": workers, "amp": amp,
                 "data.bad_files": "skip" if skip_bad_images else None}
    set_values = _parse_sets(sets)  # taken as given: --set distill=null means null
    run_dir_given = is_run_dir(model)
    if run_dir_given and not resume:
        raise typer.BadParameter(f"{model} is a run directory; add --resume to continue it",
                                 param_hint="MODEL")
    post_training = not run_dir_given and (data is None or epochs == 0)
    if resume:  # what is to be continued must be checked before --data and --out are
        with user_errors():
            if out is None or run_dir_given:
                check_resumable(model)
            else:
                check_resumable(out, needs=(LAST,))
    if resume and epochs == 0:
        raise typer.BadParameter("0 (post-training) cannot continue a run; drop --resume",
                                 param_hint="--epochs")
    # a dry run writes nothing, so it needs no run directory
    if not post_training and not run_dir_given and out is None and not dry_run:
        raise typer.BadParameter("is required (the run directory to write)",
                                 param_hint="--out")
    if force and not post_training:
        raise typer.BadParameter("applies without --data or with --epochs 0 (it replaces "
                                 "model.pt); a run directory is never replaced",
                                 param_hint="--force")
    load: dict[str, Any] = {"arch": arch, "num_classes": num_classes,
                            "pretrained": pretrained, "trust_pickle": trust_pickle}
    with user_errors():
        if run_dir_given:
            base = load_recipe(recipe or Path(model) / CONFIG)
            config = apply_overrides(base, {**overrides, "epochs": epochs}, set_values)
            _run_training(lambda: resume_run(model, overrides=config, quiet=quiet), quiet)
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
    assert data is not None and out is not None
    _run_training(lambda: binarize_and_train(
        model, data, config, out, replace_classifier=replace_classifier, download=download,
        resume=resume, quiet=quiet, **load), quiet)


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
                          f"measured recipe for {arch} {mode}", highlight=False, soft_wrap=True)
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


@app.command("eval")
def eval_cmd(
    path: Annotated[str, typer.Argument(
        help="A run directory or run checkpoint (.pt), an export (.irc, .onnx, OpenVINO "
        ".xml or folder), or an original model (anything 'binarize' takes).")],
    data: DataOpt,
    split: Annotated[str, typer.Option(
        "--split", help="Evaluation split: auto (val/, else test/), val or test.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
    = 256,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "cpu",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader processes.")]
    = 0,
    arch: Arch = None,
    num_classes: NumClasses = None,
    trust_pickle: TrustPickle = False,
    mean: Annotated[str | None, typer.Option(
        "--mean", help="Normalisation mean, e.g. 0.485,0.456,0.406 (default: recorded in "
        "the run, else the model's own).")] = None,
    std: Annotated[str | None, typer.Option("--std", help="Normalisation std.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Evaluate an evenly spaced subset of this many images.")] = None,
    skip_bad_images: SkipBad = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure top-1/top-5 accuracy and loss of a model on a data set."""
    from irconvert.evaluate import evaluate_any

    m, s = _float_list(mean, "--mean"), _float_list(std, "--std")
    if (m is None) != (s is None):
        raise typer.BadParameter("give both --mean and --std, or neither", param_hint="--mean")
    with user_errors():
        result = evaluate_any(path, data, split=split, batch_size=batch_size, device=device,
                              workers=workers, arch=arch, num_classes=num_classes,
                              trust_pickle=trust_pickle, mean=m, std=s, limit=limit,
                              bad_files="skip" if skip_bad_images else "stop")
    for note in result.get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result)
        return
    console.print(f"{path} on {result['data']} ({result['split']}, {result['images']} images): "
                  f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
                  f"loss {result['loss']:.4f}", highlight=False, soft_wrap=True)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory (replaced).")]
    = Path("runs/demo"),
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Where the trained full-precision model is cached "
        "(default ~/.cache/irconvert).")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Fine-tuning epochs (default 20).")] = None,
    fp_epochs: Annotated[int, typer.Option(
        "--fp-epochs", min=1, help="Epochs of the full-precision training (cached).")] = 15,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, auto.")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """Run the whole pipeline offline on scikit-learn's 8x8 digits.

    Trains a small full-precision CNN once (cached), binarizes it (1W/1A),
    fine-tunes it with the EDE schedule and prints FP vs binary accuracy.
    """
    from irconvert.demo import run_demo

    _run_training(lambda: run_demo(out, cache_dir=cache_dir, epochs=epochs, quiet=quiet,
                                   device=device, fp_epochs=fp_epochs), quiet)
