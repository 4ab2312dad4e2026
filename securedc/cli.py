"""Command-line interface (typer): parse → config → API → render with rich.

Exit codes: 0 success; 1 release refused by the audit (report written, nothing
exported); 2 bad input (one clear line on stderr, nothing written); 130 interrupted
(checkpoint written).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from securedc.errors import CertificationError, SecuredcError

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="securedc: private, robust, audited dataset condensation.",
)
console = Console(stderr=True)
logger = logging.getLogger("securedc.cli")


def friendly_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Map securedc errors to one stderr line and an exit code (STYLE.md skeleton C)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            return fn(*args, **kwargs)
        except CertificationError as err:
            typer.secho(f"refused: {err}", err=True, fg="red")
            raise typer.Exit(1) from None
        except (SecuredcError, OSError) as err:
            logger.debug("details", exc_info=True)
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            typer.secho(f"error: {msg}", err=True, fg="red")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: checkpoint saved (resume with --resume)", err=True, fg="yellow")
            raise typer.Exit(130) from None

    return wrapper


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[eps]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@app.command()
@friendly_errors
def condense(
    dataset: Annotated[str, typer.Option(help="digits (default, bundled), mnist, fashion-mnist, cifar10, cifar100, svhn, idx:DIR, npz:FILE, folder:DIR")] = "digits",
    data_root: Annotated[Optional[Path], typer.Option(help="where torchvision datasets live")] = None,
    download: Annotated[bool, typer.Option(help="download torchvision datasets if missing")] = False,
    ipc: Annotated[int, typer.Option(help="synthetic images per class")] = 10,
    iterations: Annotated[int, typer.Option(help="optimisation steps")] = 1000,
    discrepancy: Annotated[str, typer.Option(help="mean-embedding, mmd, characteristic, sliced-wasserstein")] = "mean-embedding",
    model: Annotated[str, typer.Option(help="architecture of the random step network")] = "convnet",
    init: Annotated[str, typer.Option(help="auto (real when non-private, noise in DP mode), real, noise")] = "auto",
    optimizer: Annotated[str, typer.Option(help="sgd or adam on the images")] = "sgd",
    lr_img: Annotated[float, typer.Option(help="image learning rate")] = 1.0,
    learn_lr: Annotated[bool, typer.Option(help="adapt the image lr online (hypergradient descent)")] = False,
    batch_real: Annotated[int, typer.Option(help="real images per class per step (expected, in DP mode)")] = 256,
    dsa: Annotated[str, typer.Option(help="DSA strategy or 'none'")] = "color_crop_cutout_flip_scale_rotate",
    grad_weight: Annotated[float, typer.Option(help="weight of the DP gradient-matching term (0 = off)")] = 0.0,
    epsilon: Annotated[str, typer.Option(help="DP target epsilon (inf = not private)")] = "inf",
    delta: Annotated[Optional[str], typer.Option(help="DP delta (default: below 1/N)")] = None,
    accountant: Annotated[str, typer.Option(help="rdp or prv")] = "rdp",
    clip: Annotated[float, typer.Option(help="per-term clipping bound C_k in DP mode")] = 1.0,
    adv_eps: Annotated[str, typer.Option(help="L-inf radius of the adversarial term, e.g. 8/255 or 0.1 (0 = off)")] = "0",
    adv_steps: Annotated[int, typer.Option(help="PGD steps of the adversarial term")] = 10,
    adv_alpha: Annotated[Optional[str], typer.Option(help="PGD step size (default adv-eps/4)")] = None,
    adv_weight: Annotated[float, typer.Option(help="weight of the adversarial term")] = 1.0,
    seed: Annotated[int, typer.Option(help="master seed")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="output directory")] = Path("securedc-out"),
    name: Annotated[Optional[str], typer.Option(help="output file stem (default DATASET-ipcN)")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="checkpoint every K steps (0 = only on Ctrl-C)")] = 0,
    resume: Annotated[Optional[Path], typer.Option(help="resume from this checkpoint")] = None,
    eval_models: Annotated[int, typer.Option(help="fresh models trained on the result (0 = skip evaluation)")] = 3,
    eval_epochs: Annotated[int, typer.Option(help="epochs per evaluation model")] = 300,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Condense a dataset into IPC synthetic images per class, evaluate and export them."""
    from securedc.config import AdversarialConfig, CondenseConfig, EvalConfig, PrivacyConfig, parse_number
    from securedc.errors import ConfigError
    from securedc.io import ensure_writable_dir

    _setup_logging(verbose)
    eps = parse_number(epsilon, name="epsilon")
    config = CondenseConfig(
        ipc=ipc,
        iterations=iterations,
        discrepancy=discrepancy,
        model=model,
        init=init,  # type: ignore[arg-type]
        optimizer=optimizer,  # type: ignore[arg-type]
        lr_img=lr_img,
        learn_lr=learn_lr,
        batch_real=batch_real,
        dsa=dsa,
        grad_weight=grad_weight,
        seed=seed,
        checkpoint_every=checkpoint_every,
        device=device,
        privacy=PrivacyConfig(
            epsilon=eps,
            delta=parse_number(delta, name="delta") if delta is not None else None,
            accountant=accountant,  # type: ignore[arg-type]
            clip=clip,
        ),
        adversarial=AdversarialConfig(
            eps=parse_number(adv_eps, name="adv-eps"),
            steps=adv_steps,
            alpha=parse_number(adv_alpha, name="adv-alpha") if adv_alpha is not None else None,
            weight=adv_weight,
        ),
    ).validate()
    eval_config = EvalConfig(models=max(eval_models, 1), epochs=eval_epochs)
    if eval_models < 0:
        raise ConfigError(f"--eval-models must be >= 0 (got {eval_models})")
    if eval_models:
        problems = eval_config.problems()
        if problems:
            raise ConfigError("; ".join(problems))
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    out_dir = ensure_writable_dir(out)

    from securedc.api import as_bundle
    from securedc.condenser import Condenser

    bundle = as_bundle(dataset, root=str(data_root) if data_root else None, download=download)
    stem = name or f"{bundle.name}-ipc{ipc}"
    target = out_dir / f"{stem}.safetensors"
    checkpoint = out_dir / f"{stem}.ckpt.safetensors"
    condenser = Condenser(
        config, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std
    )
    mechanism = condenser.make_mechanism(bundle.train_images, bundle.train_labels)
    if mechanism.private:
        console.print(
            f"[bold]DP[/bold]: target ε={eps:g}, δ={condenser._delta:g}, q={mechanism.sample_rate:.5f}, "
            f"T={config.iterations}, σ={mechanism.noise_multiplier:.4f}, C={mechanism.sensitivity:.3g}"
        )
    else:
        console.print("[yellow]not private[/yellow]: exact statistics of the real data (use --epsilon for a DP guarantee)")

    with _progress() as progress:
        task = progress.add_task(f"condensing {bundle.name}", total=config.iterations, loss="-", eps="")

        def on_step(ev: Any) -> None:
            eps_txt = f"ε {ev.epsilon_spent:.2f}" if ev.epsilon_spent is not None else ""
            if ev.epsilon_spent is not None or ev.step % 10 == 0 or ev.step == ev.total:
                progress.update(task, completed=ev.step, loss=f"{ev.loss:.4g}", eps=eps_txt)

        result = condenser.fit(
            mechanism,
            callback=on_step,
            checkpoint_path=checkpoint if (checkpoint_every or True) else None,
            resume_from=resume,
        )

    from securedc.api import Condensation

    outcome = Condensation(images=result.images, labels=result.labels, config=config, result=result, bundle=bundle)
    evaluation: dict[str, Any] = {}
    if eval_models:
        evaluation = _evaluate(outcome, eval_config)
    manifest = outcome.manifest(evaluation=evaluation)
    from securedc.export import save_condensed

    save_condensed(target, outcome.images, outcome.labels, manifest)
    if checkpoint.exists() and not checkpoint_every:
        checkpoint.unlink()
    _summary(manifest, target)


def _evaluate(outcome: Any, eval_config: Any) -> dict[str, Any]:
    from securedc.evaluate import evaluate_set, random_subset

    b = outcome.bundle
    with console.status(f"evaluating: training {eval_config.models} fresh models on the condensed set and on a random subset"):
        syn = evaluate_set(
            outcome.images, outcome.labels, b.test_images, b.test_labels,
            num_classes=b.num_classes, mean=b.mean, std=b.std, config=eval_config, seed=outcome.config.seed,
            device=outcome.config.device,
        )
        rx, ry = random_subset(b.train_images, b.train_labels, outcome.config.ipc, seed=outcome.config.seed + 1)
        rnd = evaluate_set(
            rx, ry, b.test_images, b.test_labels,
            num_classes=b.num_classes, mean=b.mean, std=b.std, config=eval_config, seed=outcome.config.seed,
            device=outcome.config.device,
        )
    return {"protocol": {"models": eval_config.models, "epochs": eval_config.epochs, "model": eval_config.model},
            "condensed": syn.to_dict(), "random_subset": rnd.to_dict()}


def _summary(manifest: dict[str, Any], target: Path) -> None:
    table = Table(title="securedc condense", show_header=False)
    table.add_row("output", str(target))
    table.add_row("dataset", f"{manifest['dataset']['name']} ({manifest['dataset']['num_train']} train images)")
    table.add_row("images", f"{manifest['num_images']} ({manifest['ipc']} per class)")
    priv = manifest["privacy"]
    if priv.get("private"):
        table.add_row("privacy", f"(ε={priv['epsilon']:.3f}, δ={priv['delta']:g})-DP  [σ={priv['noise_multiplier']:.3f}, q={priv['sample_rate']:.4f}, T={priv['steps']}]")
    else:
        table.add_row("privacy", "NOT private")
    ev = manifest.get("evaluation") or {}
    if ev:
        c, r = ev["condensed"], ev["random_subset"]
        table.add_row("accuracy", f"{100*c['mean']:.1f} ± {100*c['std']:.1f} % (random subset {100*r['mean']:.1f} ± {100*r['std']:.1f} %)")
    audit = manifest.get("audit", {})
    if audit.get("ran"):
        table.add_row("audit", "certified" if audit.get("certified") else "NOT certified")
    table.add_row("time", f"{manifest['condensation']['seconds']:.1f} s condensation")
    Console().print(table)


@app.command()
@friendly_errors
def evaluate(
    file: Annotated[Path, typer.Argument(help="condensed .safetensors file")],
    dataset: Annotated[Optional[str], typer.Option(help="test data (default: the manifest's dataset)")] = None,
    data_root: Annotated[Optional[Path], typer.Option()] = None,
    models: Annotated[int, typer.Option(help="fresh models")] = 3,
    epochs: Annotated[int, typer.Option(help="epochs per model")] = 300,
    model: Annotated[str, typer.Option(help="architecture")] = "convnet",
    seed: Annotated[int, typer.Option()] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Train fresh models on a condensed file and report test accuracy."""
    from securedc.api import as_bundle
    from securedc.config import EvalConfig
    from securedc.errors import DataError
    from securedc.evaluate import evaluate_set
    from securedc.export import load_condensed

    cs = load_condensed(file)
    bundle = as_bundle(dataset or cs.manifest["dataset"]["name"], root=str(data_root) if data_root else None)
    if tuple(cs.images.shape[1:]) != bundle.image_shape:
        raise DataError(f"{file} holds {tuple(cs.images.shape[1:])} images but {bundle.name} has {bundle.image_shape}")
    res = evaluate_set(
        cs.images, cs.labels, bundle.test_images, bundle.test_labels, num_classes=bundle.num_classes,
        mean=bundle.mean, std=bundle.std, config=EvalConfig(models=models, epochs=epochs, model=model), seed=seed,
    )
    if json_out:
        typer.echo(json.dumps(res.to_dict()))
    else:
        Console().print(f"{file}: test accuracy {res}")


@app.command()
@friendly_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="condensed .safetensors file")],
    grid: Annotated[Optional[Path], typer.Option(help="write a PNG grid of the images here")] = None,
) -> None:
    """Show the manifest (privacy, audit, config) and optionally save an image grid."""
    from securedc.export import load_condensed, save_image_grid

    cs = load_condensed(file)
    m = cs.manifest
    table = Table(title=str(file), show_header=False)
    table.add_row("dataset", f"{m['dataset']['name']}  fingerprint {m['dataset']['fingerprint'][:16]}…")
    table.add_row("images", f"{m['num_images']} × {m['shape'][1:]}  ({m['ipc']} per class)")
    table.add_row("sha256", m["tensor_sha256"])
    priv = m.get("privacy", {})
    if priv.get("private"):
        table.add_row("privacy", f"(ε={priv['epsilon']:.4f}, δ={priv['delta']:g})-DP, σ={priv['noise_multiplier']:.4f}, q={priv['sample_rate']:.5f}, T={priv['steps']}, accountant={priv['accountant']} (opacus {priv['opacus_version']})")
        table.add_row("clip bounds", ", ".join(f"{k}: {v:g}" for k, v in priv["clip_bounds"].items()))
        for item in priv.get("not_covered", []):
            table.add_row("not covered", item)
    else:
        table.add_row("privacy", "NOT differentially private")
    adv = m.get("adversarial", {})
    table.add_row("adversarial", f"eps={adv.get('eps'):.4g}, steps={adv.get('steps')}" if adv.get("enabled") else "off")
    audit = m.get("audit", {})
    table.add_row("audit", ("certified" if audit.get("certified") else "NOT certified") + ("" if audit.get("ran") else " (audit not run)"))
    for reason in audit.get("reasons", []):
        table.add_row("audit reason", str(reason))
    ev = m.get("evaluation") or {}
    if ev:
        table.add_row("accuracy", f"{100*ev['condensed']['mean']:.1f} ± {100*ev['condensed']['std']:.1f} % vs random {100*ev['random_subset']['mean']:.1f} %")
    Console().print(table)
    if grid is not None:
        save_image_grid(grid, cs.images, cs.labels, classes=m["dataset"].get("classes"))
        Console().print(f"image grid written to {grid}")


@app.command()
@friendly_errors
def datasets() -> None:
    """List the dataset sources."""
    from securedc.data import list_datasets

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("description")
    for name, desc in list_datasets():
        table.add_row(name, desc)
    Console().print(table)


def main() -> None:  # pragma: no cover
    app()
