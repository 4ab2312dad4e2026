"""Command-line interface (typer): parse → config → API → render with rich.

Exit codes: 0 success; 1 release refused by the audit (report written, nothing
exported); 2 bad input (one clear line on stderr, nothing written); 130 interrupted
(checkpoint written).
"""

from __future__ import annotations

import functools
import json
import logging
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
    """Map securedc errors to one stderr line and an exit code (docs/design.md, "Conventions")."""

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
    dataset: Annotated[str, typer.Option(help="digits (default, bundled), mnist, fashion-mnist, cifar10, cifar100, svhn, idx:DIR, npz:FILE, folder:DIR", rich_help_panel="Data")] = "digits",
    data_root: Annotated[Optional[Path], typer.Option(help="where torchvision datasets live", rich_help_panel="Data")] = None,
    download: Annotated[bool, typer.Option(help="download torchvision datasets if missing", rich_help_panel="Data")] = False,
    ipc: Annotated[int, typer.Option(help="synthetic images per class", rich_help_panel="Condensation")] = 10,
    iterations: Annotated[int, typer.Option(help="optimisation steps", rich_help_panel="Condensation")] = 300,
    discrepancy: Annotated[str, typer.Option(help="mean-embedding, mmd, characteristic, sliced-wasserstein", rich_help_panel="Condensation")] = "mean-embedding",
    model: Annotated[str, typer.Option(help="architecture of the random step network", rich_help_panel="Condensation")] = "convnet",
    init: Annotated[str, typer.Option(help="auto (mix when non-private, noise in DP mode), real, mix (mean of --init-mix real images), noise", rich_help_panel="Condensation")] = "auto",
    init_mix: Annotated[int, typer.Option(help="real images averaged per synthetic image with --init mix", rich_help_panel="Condensation")] = 4,
    optimizer: Annotated[str, typer.Option(help="sgd or adam on the images", rich_help_panel="Condensation")] = "sgd",
    lr_img: Annotated[Optional[float], typer.Option(help="image learning rate in [0,1] pixel units (default: DM's lr 1 in normalised units = std² for SGD from --init real, 1.0 from mix/noise, 0.01 for Adam)", rich_help_panel="Condensation")] = None,
    learn_lr: Annotated[bool, typer.Option(help="adapt the image lr online (hypergradient descent)", rich_help_panel="Condensation")] = False,
    batch_real: Annotated[int, typer.Option(help="real images per class per step (expected, in DP mode)", rich_help_panel="Condensation")] = 256,
    real_chunk: Annotated[int, typer.Option(help="real images per forward pass (0 = automatic, cache-sized on CPU)", rich_help_panel="Condensation")] = 0,
    real_precision: Annotated[str, typer.Option(help="real-side network forward: fp32, bf16 or auto (bf16 where native)", rich_help_panel="Condensation")] = "auto",
    dsa: Annotated[str, typer.Option(help="DSA strategy or 'none'", rich_help_panel="Condensation")] = "color_crop_cutout_flip_scale_rotate",
    grad_weight: Annotated[float, typer.Option(help="weight of the DP gradient-matching term (0 = off)", rich_help_panel="Condensation")] = 0.0,
    epsilon: Annotated[str, typer.Option(help="DP target epsilon (inf = not private)", rich_help_panel="Privacy")] = "inf",
    delta: Annotated[Optional[str], typer.Option(help="DP delta (default: below 1/N)", rich_help_panel="Privacy")] = None,
    accountant: Annotated[str, typer.Option(help="rdp or prv", rich_help_panel="Privacy")] = "rdp",
    clip: Annotated[float, typer.Option(help="per-term clipping bound C_k in DP mode", rich_help_panel="Privacy")] = 1.0,
    sample_rate: Annotated[Optional[str], typer.Option(help="DP: Poisson rate q of each release (default: the signal-to-noise rule, chosen from epsilon, delta and --releases only)", rich_help_panel="Privacy")] = None,
    counts: Annotated[str, typer.Option(help="DP: class counts 'released' through the mechanism (accounted) or declared 'public' by you", rich_help_panel="Privacy")] = "released",
    reuse: Annotated[int, typer.Option(help="optimisation steps per release of the statistics bank when not private (1 = fresh real batch every step, as DM)", rich_help_panel="Condensation")] = 1,
    releases: Annotated[Optional[int], typer.Option(help="releases R of the statistics bank (default: iterations/reuse; DP: min(iterations, 100)); only releases touch real data", rich_help_panel="Condensation")] = None,
    save_bank: Annotated[bool, typer.Option("--save-bank", help="also write the statistics bank NAME.bank.safetensors (a DP artefact in DP mode)", rich_help_panel="Condensation")] = False,
    from_bank: Annotated[Optional[Path], typer.Option(help="re-condense from a saved statistics bank (no access to real data, no privacy cost)", rich_help_panel="Condensation")] = None,
    bank_memory: Annotated[float, typer.Option(help="refuse a statistics bank larger than this many GiB", rich_help_panel="Condensation")] = 4.0,
    adv_eps: Annotated[str, typer.Option(help="L-inf radius of the adversarial term, e.g. 8/255 or 0.1 (0 = off)", rich_help_panel="Robustness")] = "0",
    adv_steps: Annotated[int, typer.Option(help="PGD steps of the adversarial term", rich_help_panel="Robustness")] = 10,
    adv_alpha: Annotated[Optional[str], typer.Option(help="PGD step size (default adv-eps/4)", rich_help_panel="Robustness")] = None,
    adv_weight: Annotated[float, typer.Option(help="weight of the adversarial term", rich_help_panel="Robustness")] = 1.0,
    adv_network: Annotated[str, typer.Option(help="network PGD attacks: random (the step's random network) or synthetic (trained on S only)", rich_help_panel="Robustness")] = "random",
    adv_synthetic: Annotated[bool, typer.Option(help="also PGD-perturb the synthetic images (min-max)", rich_help_panel="Robustness")] = False,
    adv_mode: Annotated[str, typer.Option(help="robust-features (match real features under a robust extractor) or perturbed (earlier variant)", rich_help_panel="Robustness")] = "robust-features",
    robust_extractor: Annotated[Optional[Path], typer.Option(help="safetensors weights of a robust extractor trained on data you declare PUBLIC (default: adversarially trained on S only)", rich_help_panel="Robustness")] = None,
    soft_labels: Annotated[bool, typer.Option(help="export per-image soft labels of S from the robust teacher (needs --adv-eps)", rich_help_panel="Robustness")] = False,
    seed: Annotated[int, typer.Option(help="master seed", rich_help_panel="Condensation")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps", rich_help_panel="Condensation")] = "auto",
    out: Annotated[Path, typer.Option(help="output directory", rich_help_panel="Output")] = Path("securedc-out"),
    name: Annotated[Optional[str], typer.Option(help="output file stem (default DATASET-ipcN)", rich_help_panel="Output")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="checkpoint every K steps (0 = only on Ctrl-C)", rich_help_panel="Condensation")] = 0,
    resume: Annotated[Optional[Path], typer.Option(help="resume from this checkpoint", rich_help_panel="Condensation")] = None,
    eval_models: Annotated[int, typer.Option(help="fresh models trained on the result (0 = skip evaluation)", rich_help_panel="Audit")] = 3,
    eval_epochs: Annotated[int, typer.Option(help="epochs per evaluation model", rich_help_panel="Audit")] = 300,
    audit: Annotated[bool, typer.Option("--audit/--no-audit", help="audit and certify before export (default on)", rich_help_panel="Audit")] = True,
    force: Annotated[bool, typer.Option("--force", help="export even when the audit fails (manifest says certified: false)", rich_help_panel="Audit")] = False,
    policy: Annotated[Optional[Path], typer.Option(help="TOML file overriding certification thresholds", rich_help_panel="Audit")] = None,
    audit_shadows: Annotated[int, typer.Option(help="shadow condensations for LiRA/RMIA (0 = skip)", rich_help_panel="Audit")] = 2,
    audit_canaries: Annotated[int, typer.Option(help="canaries of the one-run privacy audit (0 = skip)", rich_help_panel="Audit")] = 100,
    audit_iterations: Annotated[int, typer.Option(help="steps of each shadow/canary condensation, capped at --iterations (0 = same as --iterations)", rich_help_panel="Audit")] = 100,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel="Output")] = False,
) -> None:
    """Condense a dataset into IPC synthetic images per class, evaluate, audit and export them.

    With the audit (default) a stratified 20 % of the training data is held out as
    non-members before condensing, the release is attacked, and it is exported only if
    every certification gate passes (exit 1 otherwise; the report is written either way).
    """
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
        init_mix=init_mix,
        optimizer=optimizer,  # type: ignore[arg-type]
        lr_img=lr_img,
        learn_lr=learn_lr,
        batch_real=batch_real,
        real_chunk=real_chunk,
        real_precision=real_precision,  # type: ignore[arg-type]
        dsa=dsa,
        grad_weight=grad_weight,
        seed=seed,
        reuse=reuse,
        releases=releases,
        bank_memory_gb=bank_memory,
        checkpoint_every=checkpoint_every,
        device=device,
        privacy=PrivacyConfig(
            epsilon=eps,
            delta=parse_number(delta, name="delta") if delta is not None else None,
            accountant=accountant,  # type: ignore[arg-type]
            clip=clip,
            sample_rate=parse_number(sample_rate, name="sample-rate") if sample_rate is not None else None,
            counts=counts,  # type: ignore[arg-type]
        ),
        adversarial=AdversarialConfig(
            eps=parse_number(adv_eps, name="adv-eps"),
            steps=adv_steps,
            alpha=parse_number(adv_alpha, name="adv-alpha") if adv_alpha is not None else None,
            weight=adv_weight,
            perturb_synthetic=adv_synthetic,
            attack_network=adv_network,  # type: ignore[arg-type]
            mode=adv_mode,  # type: ignore[arg-type]
            robust_extractor=str(robust_extractor) if robust_extractor is not None else None,
            soft_labels=soft_labels,
        ),
    ).validate()
    if soft_labels and not (config.adversarial.enabled and config.adversarial.mode == "robust-features"):
        raise ConfigError("--soft-labels needs --adv-eps > 0 with --adv-mode robust-features (the robust teacher)")
    eval_config = EvalConfig(models=max(eval_models, 1), epochs=eval_epochs)
    if eval_models < 0:
        raise ConfigError(f"--eval-models must be >= 0 (got {eval_models})")
    if eval_models:
        problems = eval_config.problems()
        if problems:
            raise ConfigError("; ".join(problems))
    out_dir = ensure_writable_dir(out)
    audit_plan = _audit_plan(policy, audit_shadows, audit_canaries, audit_iterations) if audit else None

    from securedc.api import as_bundle
    from securedc.condenser import Condenser

    bundle = as_bundle(dataset, root=str(data_root) if data_root else None, download=download)
    stem = name or f"{bundle.name}-ipc{ipc}"
    target = out_dir / f"{stem}.safetensors"
    checkpoint = out_dir / f"{stem}.ckpt.safetensors"
    full_bundle = bundle
    if audit_plan is not None:  # reserve non-members BEFORE condensing: the condenser sees members only
        bundle, split = _member_bundle(bundle, audit_plan[1], seed=config.seed)
    from securedc.plugins.distributed import launched_distributed

    soft = None  # per-image soft labels (--soft-labels; single-process runs)
    if launched_distributed():  # torchrun: classes split across ranks; rank 0 alone evaluates/audits/exports
        from securedc.plugins.distributed import condense_cli

        result = condense_cli(config, bundle, console=console, progress=_progress, checkpoint=checkpoint,
                              resume_from=resume, keep_checkpoints=bool(checkpoint_every))
        if result is None:
            return
    else:
        bank = bank_meta = None
        if from_bank is not None:  # phase 2 only: the bank is the sole input, no real data, no privacy cost
            from securedc.bank import StatisticsBank, config_for_bank

            bank, bank_meta = StatisticsBank.load(from_bank)
            config = config_for_bank(config, bank_meta)
        condenser = Condenser(
            config, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std
        )
        if bank is not None:
            condenser.check_bank(bank_meta, source=from_bank)
            mechanism = None
            console.print(f"[bold]from bank[/bold] {from_bank}: {len(bank)} releases, no access to real data")
        else:
            mechanism = condenser.make_mechanism(
                bundle.train_images, bundle.train_labels, resume_from=resume if config.privacy.private else None
            )
        if mechanism is not None and mechanism.private:
            plan = condenser.plan
            console.print(
                f"[bold]DP[/bold]: target ε={eps:g}, δ={plan.delta:g}, R={plan.releases} releases at q={plan.sample_rate:g}, "
                f"σ={plan.noise_multiplier:.4f}, C={mechanism.sensitivity:.3g}, counts {plan.counts}; "
                f"{config.iterations} optimisation steps"
            )
        elif mechanism is not None:
            console.print("[yellow]not private[/yellow]: exact statistics of the real data (use --epsilon for a DP guarantee)")
        console.print(f"device: {config.resolved_device}" + (" (--device auto)" if config.device == "auto" else ""))

        with _progress() as progress:
            task = progress.add_task(f"condensing {bundle.name}", total=config.iterations, loss="-", eps="")

            def on_step(ev: Any) -> None:
                eps_txt = f"ε {ev.epsilon_spent:.2f}" if ev.epsilon_spent is not None else ""
                if ev.epsilon_spent is not None or ev.step % 10 == 0 or ev.step == ev.total:
                    progress.update(task, completed=ev.step, loss=f"{ev.loss:.4g}", eps=eps_txt)

            result = condenser.fit(
                mechanism,
                bank=bank,
                bank_privacy=(bank_meta or {}).get("privacy"),
                callback=on_step,
                checkpoint_path=checkpoint,  # always: Ctrl-C saves here; removed after success unless kept
                resume_from=resume,
            )
        if save_bank and result.bank is not None:
            bank_path = out_dir / f"{stem}.bank.safetensors"
            condenser.save_bank(bank_path, result, dataset=bundle.name)
            console.print(f"statistics bank: {bank_path}")
        if config.adversarial.soft_labels:  # post-processing of S by the robust teacher: no privacy cost
            from securedc.terms.adversarial import soft_labels_for

            soft = soft_labels_for(condenser.terms, result.images, result.labels, model_factory=condenser.make_network,
                                   temperature=config.adversarial.soft_label_temperature)

    from securedc.api import Condensation

    outcome = Condensation(images=result.images, labels=result.labels, config=config, result=result, bundle=bundle)
    if audit_plan is not None:
        manifest, owner = _audit_release(outcome, full_bundle, split, eval_config, audit_plan, target=target,
                                         force=force)
    else:  # numbers measured on real data go to the owner record (NAME.owner.json), never into the release
        evaluation = _evaluate(outcome, eval_config) if eval_models else None
        manifest = outcome.manifest()
        owner = outcome.owner_record(**({"evaluation": evaluation} if evaluation else {}))
    from securedc.export import save_condensed

    save_condensed(target, outcome.images, outcome.labels, manifest, owner=owner, soft_labels=soft)
    if checkpoint.exists() and not checkpoint_every:
        checkpoint.unlink()
    _summary(manifest, owner, target)


def _audit_plan(policy_file: Optional[Path], shadows: int, canaries: int, iterations: int) -> tuple[Any, Any]:
    """Validate the audit options before any long computation: (policy, AuditConfig)."""
    from securedc.audits.certify import load_policy
    from securedc.audits.pipeline import AuditConfig

    return load_policy(policy_file), AuditConfig(shadows=shadows, canaries=canaries, audit_iterations=iterations).validate()


def _member_bundle(bundle: Any, audit_config: Any, *, seed: int) -> tuple[Any, dict[str, Any]]:
    """The bundle restricted to the audit's members, plus the split record for the owner record."""
    import dataclasses

    from securedc.audits.pipeline import split_indices, split_record

    m, _ = split_indices(bundle.train_labels, holdout_fraction=audit_config.holdout_fraction, seed=seed)
    split = split_record(bundle.train_labels, holdout_fraction=audit_config.holdout_fraction, seed=seed,
                         fingerprint=bundle.fingerprint)
    members = dataclasses.replace(bundle, train_images=bundle.train_images[m], train_labels=bundle.train_labels[m],
                                  fingerprint=bundle.fingerprint)
    return members, split


#: Manifest keys computed from the private data that older releases carried; --recertify moves them out.
_OWNER_ONLY_MANIFEST_KEYS = ("audit", "evaluation", "cache", "dataset.fingerprint", "dataset.num_train",
                             "dataset.num_test", "condensation.seconds")


def _legacy_owner_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """An owner record for a release written before owner files existed (its private values moved out)."""
    ds = manifest.get("dataset") or {}
    record: dict[str, Any] = {"dataset": {k: ds[k] for k in ("fingerprint", "num_train", "num_test") if k in ds}}
    seconds = (manifest.get("condensation") or {}).get("seconds")
    if seconds is not None:
        record["condensation"] = {"seconds": seconds}
    for key in ("evaluation", "cache"):
        if manifest.get(key):
            record[key] = manifest[key]
    return record


def _release_audit(certification: Any, *, forced: bool = False) -> dict[str, Any]:
    """The release's ``audit`` section: the verdict and the (public) policy, no measured number."""
    return {"ran": True, "certified": certification.certified, "forced": forced,
            "policy": certification.to_dict()["policy"]}


def _owner_audit(outcome: Any, split: dict[str, Any], report_html: Path, *, forced: bool = False) -> dict[str, Any]:
    """The owner record's ``audit`` section: gates, reasons and headline numbers, the member split."""
    from securedc.audits.pipeline import headline

    cert = outcome.certification
    return {
        "ran": True,
        "certified": cert.certified,
        "forced": forced,
        "reasons": cert.reasons,
        "gates": [g.to_dict() for g in cert.gates],
        "policy": cert.to_dict()["policy"],
        "headline": headline(outcome),
        "split": split,
        "report": str(report_html),
    }


def _run_and_report(
    images: Any, labels: Any, *, manifest: dict[str, Any], bundle: Any, members: Any, nonmembers: Any,
    config: Any, split: dict[str, Any], eval_config: Any, plan: tuple[Any, Any], report_dir: Path,
    epsilon_history: Any, owner: dict[str, Any],
) -> tuple[Any, Path]:
    """Run every audit (accuracy on ``bundle``'s test set), write NAME.report/ (owner-only); returns
    (AuditOutcome, html). ``owner`` is the owner record shown in the report."""
    from securedc.audits.pipeline import run_audits
    from securedc.audits.report import write_report
    from securedc.export import tensor_digest

    policy, audit_config = plan
    with console.status("auditing the release") as status:
        outcome = run_audits(
            images, labels, members=members, nonmembers=nonmembers, test=(bundle.test_images, bundle.test_labels),
            num_classes=bundle.num_classes, mean=bundle.mean, std=bundle.std, config=config, eval_config=eval_config,
            audit=audit_config, policy=policy, progress=lambda msg: status.update(f"auditing: {msg}"),
        )
    outcome.split = split
    shown = dict(manifest, tensor_sha256=tensor_digest(images, labels), num_images=int(labels.shape[0]))
    html = write_report(report_dir, manifest=shown, results=outcome.results, certification=outcome.certification,
                        images=images, labels=labels, classes=bundle.classes, epsilon_history=epsilon_history,
                        owner=owner)
    return outcome, html


def _audit_release(outcome: Any, bundle: Any, split: dict[str, Any], eval_config: Any, plan: tuple[Any, Any], *,
                   target: Path, force: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Audit a fresh condensation; returns (release manifest, owner record) or raises CertificationError.

    The release gets the verdict only; gates, numbers, evaluation and the member split go to the
    owner record (and the report)."""
    from securedc.audits.pipeline import split_members
    from securedc.audits.utility import evaluation_section

    report_dir = target.parent / f"{target.name.removesuffix('.safetensors')}.report"
    draft = outcome.manifest()
    members, nonmembers = split_members(bundle.train_images, bundle.train_labels,
                                        holdout_fraction=split["holdout_fraction"], seed=split["seed"])
    audited, html = _run_and_report(
        outcome.images, outcome.labels, manifest=draft, bundle=bundle, members=members, nonmembers=nonmembers,
        config=outcome.config, split=split,
        eval_config=eval_config, plan=plan, report_dir=report_dir, epsilon_history=outcome.result.epsilon_history,
        owner=outcome.owner_record(audit={"split": split}),
    )
    forced = force and not audited.certification.certified
    manifest = outcome.manifest(audit=_release_audit(audited.certification, forced=forced))
    owner = outcome.owner_record(evaluation=evaluation_section(audited.results["utility"]),
                                 audit=_owner_audit(audited, split, html, forced=forced))
    _print_gates(audited.certification, html)
    if not audited.certification.certified and not force:
        failed = ", ".join(g.name for g in audited.certification.failed)
        raise CertificationError(
            f"the audit failed gate(s) {failed}; nothing was exported. Report: {html}. "
            "Fix the release (e.g. --epsilon for privacy) or export anyway with --force (marked uncertified).",
            report_dir=str(report_dir),
        )
    return manifest, owner


def _print_gates(certification: Any, html: Path) -> None:
    table = Table(title="audit: " + ("CERTIFIED" if certification.certified else "NOT CERTIFIED"))
    for col in ("gate", "result", "reason"):
        table.add_column(col)
    for g in certification.gates:
        table.add_row(g.name, "[green]pass[/green]" if g.passed else "[red]FAIL[/red]", g.reason)
    console.print(table)
    console.print(f"report: {html}")


def _evaluate(outcome: Any, eval_config: Any) -> dict[str, Any]:
    from securedc.evaluate import evaluate_set, random_subset

    b = outcome.bundle
    with console.status(f"evaluating: training {eval_config.models} fresh models on the condensed set and on a random subset"):
        syn = evaluate_set(
            outcome.images, outcome.labels, b.test_images, b.test_labels,
            num_classes=b.num_classes, mean=b.mean, std=b.std, config=eval_config, seed=outcome.config.seed,
            device=outcome.config.resolved_device,
        )
        rx, ry = random_subset(b.train_images, b.train_labels, outcome.config.ipc, seed=outcome.config.seed + 1)
        rnd = evaluate_set(
            rx, ry, b.test_images, b.test_labels,
            num_classes=b.num_classes, mean=b.mean, std=b.std, config=eval_config, seed=outcome.config.seed,
            device=outcome.config.resolved_device,
        )
    return {"protocol": {"models": eval_config.models, "epochs": eval_config.epochs, "model": eval_config.model},
            "condensed": syn.to_dict(), "random_subset": rnd.to_dict()}


def _owner_row(owner: dict[str, Any] | None, target: Path) -> tuple[str, str]:
    """The table row naming the owner record (or saying it was not found)."""
    from securedc.owner import owner_path

    if owner is None:
        return "owner file", f"owner file not found ({owner_path(target).name}); numbers measured on real data are unavailable"
    return "owner file", f"{owner_path(target)} (owner only: fingerprint, counts, audit and evaluation numbers)"


def _summary(manifest: dict[str, Any], owner: dict[str, Any] | None, target: Path) -> None:
    """The table printed after ``condense``: public facts from the release, measured numbers from the owner record."""
    own = owner or {}
    table = Table(title="securedc condense", show_header=False)
    table.add_row("output", str(target))
    table.add_row(*_owner_row(owner, target))
    num_train = (own.get("dataset") or {}).get("num_train")
    table.add_row("dataset", manifest["dataset"]["name"] + (f" ({num_train} train images)" if num_train is not None else ""))
    table.add_row("images", f"{manifest['ipc'] * len(manifest['dataset']['classes'])} ({manifest['ipc']} per class)")
    priv = manifest["privacy"]
    if priv.get("private"):
        table.add_row("privacy", f"(ε={priv['epsilon']:.3f}, δ={priv['delta']:g})-DP  [σ={priv['noise_multiplier']:.3f}, q={priv['sample_rate']:.4f}, T={priv['steps']}]")
    else:
        table.add_row("privacy", "NOT private")
    ev = own.get("evaluation") or {}
    if ev:
        c, r = ev["condensed"], ev["random_subset"]
        table.add_row("accuracy", f"{100*c['mean']:.1f} ± {100*c['std']:.1f} % (random subset {100*r['mean']:.1f} ± {100*r['std']:.1f} %)")
    audit = manifest.get("audit", {})
    if audit.get("ran"):
        table.add_row("audit", ("certified" if audit.get("certified") else "NOT certified")
                      + (" (forced export)" if audit.get("forced") else ""))
    seconds = (own.get("condensation") or {}).get("seconds")
    if seconds is not None:
        table.add_row("time", f"{seconds:.1f} s condensation")
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


@app.command("audit")
@friendly_errors
def audit_cmd(
    file: Annotated[Path, typer.Argument(help="condensed .safetensors file")],
    dataset: Annotated[Optional[str], typer.Option(help="the real data it was condensed from (default: the manifest's)")] = None,
    data_root: Annotated[Optional[Path], typer.Option()] = None,
    policy: Annotated[Optional[Path], typer.Option(help="TOML file overriding certification thresholds")] = None,
    recertify: Annotated[bool, typer.Option("--recertify", help="write the new verdict into the file's manifest (and the numbers into its owner file)")] = False,
    audit_shadows: Annotated[int, typer.Option(help="shadow condensations for LiRA/RMIA (0 = skip)")] = 2,
    audit_canaries: Annotated[int, typer.Option(help="canaries of the one-run privacy audit (0 = skip)")] = 100,
    audit_iterations: Annotated[int, typer.Option(help="steps of each shadow/canary condensation (0 = the file's T)")] = 100,
    eval_models: Annotated[int, typer.Option(help="fresh models per architecture for the utility audit")] = 3,
    eval_epochs: Annotated[int, typer.Option(help="epochs per model")] = 300,
    report: Annotated[Optional[Path], typer.Option(help="report directory (default FILE.report next to the file)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Audit an existing condensed file (and re-certify it with --recertify).

    Members/non-members: an audited `securedc condense` records its split (dataset
    fingerprint, holdout fraction, seed, members hash) in the owner file FILE.owner.json beside
    the release, and the split is recreated exactly. Without that file the audit cannot know
    which examples the condenser used: it assumes the whole training set (members) and uses half
    of the test set as non-members, the other half for accuracy. Exit 1 when the file is not
    certified (report written either way).
    """
    import dataclasses

    from securedc.api import as_bundle
    from securedc.audits.pipeline import split_indices, split_members, split_record
    from securedc.audits.report import epsilon_history_from_privacy
    from securedc.config import CondenseConfig, EvalConfig
    from securedc.errors import ConfigError, DataError
    from securedc.export import load_condensed, update_manifest
    from securedc.owner import owner_path, read_owner_record, write_owner_record

    _setup_logging(verbose)
    eval_config = EvalConfig(models=eval_models, epochs=eval_epochs)
    problems = eval_config.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    plan = _audit_plan(policy, audit_shadows, audit_canaries, audit_iterations)
    cs = load_condensed(file)
    m = cs.manifest
    owner = read_owner_record(file, tensor_sha256=m["tensor_sha256"], missing_ok=True)
    if owner is None:
        console.print(f"[yellow]owner file not found[/yellow] ({owner_path(file)})")
    bundle = as_bundle(dataset or m["dataset"]["name"], root=str(data_root) if data_root else None)
    if tuple(cs.images.shape[1:]) != bundle.image_shape:
        raise DataError(f"{file} holds {tuple(cs.images.shape[1:])} images but {bundle.name} has {bundle.image_shape}")
    config = CondenseConfig.from_dict(m["config"]) if "config" in m else CondenseConfig(ipc=int(m.get("ipc", 1)))
    # the owner file holds the split; files written before it existed kept it in the manifest
    split = ((owner or {}).get("audit") or {}).get("split") or (m.get("audit") or {}).get("split")
    if split and split.get("dataset_fingerprint") == bundle.fingerprint:
        check = split_record(bundle.train_labels, holdout_fraction=split["holdout_fraction"], seed=split["seed"],
                             fingerprint=bundle.fingerprint)
        if check["members_sha256"] != split.get("members_sha256"):
            raise DataError(f"{file}: recreated member split does not match the recorded one "
                            "(different securedc version or data); cannot audit membership reliably")
        audit_bundle = bundle
        members, nonmembers = split_members(bundle.train_images, bundle.train_labels,
                                            holdout_fraction=split["holdout_fraction"], seed=split["seed"])
        console.print(f"members/non-members: recreated the recorded split ({split['num_members']} / {split['num_nonmembers']})")
    else:
        if split:
            console.print("[yellow]the file's dataset fingerprint differs from this dataset's[/yellow]")
        # unknown split: every training example may have been used -> members = the whole training set,
        # non-members = half of the test set, accuracy on the other half (documented limitation)
        t_idx, n_idx = split_indices(bundle.test_labels, holdout_fraction=0.5, seed=config.seed)
        members = (bundle.train_images, bundle.train_labels)
        nonmembers = (bundle.test_images[n_idx], bundle.test_labels[n_idx])
        audit_bundle = dataclasses.replace(
            bundle, test_images=bundle.test_images[t_idx], test_labels=bundle.test_labels[t_idx],
            fingerprint=bundle.fingerprint,
        )
        n_train = int(bundle.train_labels.shape[0])
        split = {"holdout_fraction": None, "seed": config.seed, "dataset_fingerprint": bundle.fingerprint,
                 "num_members": n_train, "num_nonmembers": int(n_idx.numel()), "members": "whole training set",
                 "nonmembers": "half of the test set (split unknown: file not made by an audited securedc condense)"}
        console.print("[yellow]no recorded split[/yellow]: members = whole training set, non-members = half the test set")
    report_dir = report or file.parent / f"{file.name.removesuffix('.safetensors')}.report"
    outcome, html = _run_and_report(
        cs.images, cs.labels, manifest=m, bundle=audit_bundle, members=members, nonmembers=nonmembers,
        config=config, split=split,
        eval_config=eval_config, plan=plan, report_dir=report_dir,
        epsilon_history=epsilon_history_from_privacy(m.get("privacy") or {}),
        owner={**(owner or {}), "audit": {"split": split}},
    )
    _print_gates(outcome.certification, html)
    if recertify:  # owner file first: the release on disk never names a verdict its owner file lacks
        record = dict(owner) if owner is not None else _legacy_owner_record(m)
        record["audit"] = _owner_audit(outcome, split, html)
        if "utility" in outcome.results:  # the re-audit's models are the new evaluation (as in condense)
            from securedc.audits.utility import evaluation_section

            record["evaluation"] = evaluation_section(outcome.results["utility"])
        write_owner_record(file, record, tensor_sha256=m["tensor_sha256"])
        update_manifest(file, {"audit": _release_audit(outcome.certification)}, drop=_OWNER_ONLY_MANIFEST_KEYS)
        console.print(f"manifest of {file} updated: certified = {outcome.certification.certified}; "
                      f"audit numbers in {owner_path(file)}")
    if not outcome.certification.certified:
        failed = ", ".join(g.name for g in outcome.certification.failed)
        raise CertificationError(f"{file} is not certified: failed gate(s) {failed}. Report: {html}",
                                 report_dir=str(report_dir))


@app.command()
@friendly_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="condensed .safetensors file")],
    grid: Annotated[Optional[Path], typer.Option(help="write a PNG grid of the images here")] = None,
) -> None:
    """Show the manifest (privacy, audit, config) and optionally save an image grid.

    Numbers measured on the real data (fingerprint, counts, audit reasons, accuracy) are read from
    the owner file FILE.owner.json when it is present; the release itself holds none.
    """
    from securedc.errors import DataError
    from securedc.export import load_condensed, save_image_grid
    from securedc.owner import read_owner_record

    cs = load_condensed(file)
    m = cs.manifest
    try:
        owner = read_owner_record(file, tensor_sha256=m["tensor_sha256"], missing_ok=True)
        owner_row = _owner_row(owner, file)
    except DataError as err:  # unreadable or another release's record: show the release alone
        owner, owner_row = None, ("owner file", str(err))
    own = owner or {}
    own_ds = own.get("dataset") or {}
    table = Table(title=str(file), show_header=False)
    table.add_row(*owner_row)
    dataset_txt = m["dataset"]["name"]
    if own_ds.get("fingerprint"):
        dataset_txt += f"  fingerprint {own_ds['fingerprint'][:16]}…"
    if own_ds.get("num_train") is not None:
        dataset_txt += f"  ({own_ds['num_train']} train images)"
    table.add_row("dataset", dataset_txt)
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
    table.add_row("audit", ("certified" if audit.get("certified") else "NOT certified")
                  + ("" if audit.get("ran") else " (audit not run)") + (" (forced export)" if audit.get("forced") else ""))
    for reason in (own.get("audit") or {}).get("reasons", []):
        table.add_row("audit reason", str(reason))
    ev = own.get("evaluation") or {}
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
