"""Command-line interface (typer): parse → config → library call → render with rich.

Every workflow lives in the library (:func:`securedc.release`, :func:`securedc.audit_file`);
a command turns its options into configurations, calls it with a :class:`~securedc.cli_render.Renderer`
as the progress callback, and renders the result. Library errors name configuration fields
(``privacy.epsilon``); this module shows them as flags (``--epsilon``).

Exit codes: 0 success; 1 release refused by the audit (report written, nothing
exported); 2 bad input (one clear line on stderr, nothing written); 130 interrupted
(checkpoint written).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from securedc.cli_render import Renderer, owner_row, print_gates, print_summary
from securedc.config import DSA_DEFAULT
from securedc.errors import CertificationError, ConfigError, SecuredcError

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="securedc: private, robust, audited dataset condensation.",
)
console = Console(stderr=True)
logger = logging.getLogger("securedc.cli")

#: configuration fields whose flag is not ``--`` + the field's last name (``_`` → ``-``)
_FLAGS = {"bank_memory_gb": "--bank-memory", "eval.models": "--eval-models", "eval.epochs": "--eval-epochs",
          "audit.shadows": "--audit-shadows", "audit.canaries": "--audit-canaries",
          "audit.audit_iterations": "--audit-iterations"}
_FIELD = re.compile(r"\b(?:privacy|adversarial|eval|audit)\.[a-z_]+\b")


def flag_for(field: str) -> str:
    """The command-line flag of a configuration field.

    Example:
        >>> flag_for("privacy.epsilon"), flag_for("adversarial.eps"), flag_for("lr_img"), flag_for("eval.models")
        ('--epsilon', '--adv-eps', '--lr-img', '--eval-models')
        >>> flag_for("--adv-train-eps")  # already a flag
        '--adv-train-eps'
    """
    from securedc.config import ADVERSARIAL_OPTIONS

    if field.startswith("--"):
        return field
    if field in _FLAGS:
        return _FLAGS[field]
    section, _, name = field.rpartition(".")
    if section == "adversarial":
        name = next((opt for opt, f in ADVERSARIAL_OPTIONS.items() if f == name), name)
    return "--" + name.replace("_", "-")


def _as_flags(err: ConfigError) -> str:
    """A ConfigError's message with every field named by its flag."""
    if not err.problems:
        return str(err)
    parts = [f"{flag_for(p.field)} {p.text}" if hasattr(p, "field") else str(p) for p in err.problems]
    return _FIELD.sub(lambda m: flag_for(m.group(0)), "; ".join(parts))


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
            text = _as_flags(err) if isinstance(err, ConfigError) else str(err)
            msg = text.splitlines()[0] if text else type(err).__name__
            typer.secho(f"error: {msg}", err=True, fg="red")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            # a condensation in progress logs where its checkpoint went; nothing else writes one
            typer.secho("interrupted", err=True, fg="yellow")
            raise typer.Exit(130) from None

    return wrapper


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _audit_config(shadows: int, canaries: int, iterations: int) -> Any:
    from securedc.audits.pipeline import AuditConfig

    return AuditConfig(shadows=shadows, canaries=canaries, audit_iterations=iterations)


def _eval_config(models: int, epochs: int) -> Any:
    from securedc.config import EvalConfig

    return EvalConfig(models=models, epochs=epochs)


#: condense options that are not configuration fields: where the data comes from, what is written, the audit
_RELEASE_OPTIONS = ("dataset", "data_root", "download", "out", "name", "resume", "from_bank", "save_bank", "force",
                    "policy")


def _release_request(options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``condense``'s options → (CondenseConfig, keyword arguments of :func:`securedc.release`)."""
    from securedc.config import CondenseConfig

    run = {key: options.pop(key) for key in _RELEASE_OPTIONS}
    run["data"], run["root"] = run.pop("dataset"), run.pop("data_root")
    eval_models, eval_epochs = options.pop("eval_models"), options.pop("eval_epochs")
    audit = _audit_config(options.pop("audit_shadows"), options.pop("audit_canaries"), options.pop("audit_iterations"))
    audited = options.pop("audit")
    if not audited and run.get("policy") is not None:
        raise ConfigError("--policy sets the audit's certification thresholds; drop it or drop --no-audit")
    options["bank_memory_gb"] = options.pop("bank_memory")
    config = CondenseConfig.from_options(**options)
    # with the audit, --eval-models 0 still trains one model per architecture (the utility audit needs it)
    run.update(eval_config=_eval_config(eval_models if eval_models else 1, eval_epochs), evaluate=eval_models != 0,
               audit=audit if audited else None)
    return config, run


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
    init: Annotated[str, typer.Option(help="auto (non-private: kmeans when every class has >= 50 images per synthetic image, else mix; prototype in DP mode), real, mix (mean of --init-mix real images), kmeans (per-class k-means centres, each the mean of >= --init-mix real images), noise, prototype (the DP sub-class centres of the prototype rounds, else DP class means + public noise)", rich_help_panel="Condensation")] = "auto",
    init_mix: Annotated[int, typer.Option(help="real images averaged per synthetic image with --init mix; the fewest a centre averages with --init kmeans", rich_help_panel="Condensation")] = 4,
    optimizer: Annotated[str, typer.Option(help="sgd or adam on the images", rich_help_panel="Condensation")] = "sgd",
    lr_img: Annotated[Optional[float], typer.Option(help="image learning rate in [0,1] pixel units (default: DM's lr 1 in normalised units = std² for SGD from --init real/mix/kmeans, 1.0 from noise/prototypes, scaled down when the DP bank is mostly noise, 0.01 for Adam)", rich_help_panel="Condensation")] = None,
    learn_lr: Annotated[bool, typer.Option(help="adapt the image lr online (hypergradient descent)", rich_help_panel="Condensation")] = False,
    batch_real: Annotated[int, typer.Option(help="real images per class per release (DP: at most this many expected; caps the rule's q)", rich_help_panel="Condensation")] = 256,
    real_chunk: Annotated[int, typer.Option(help="images per network pass, real and synthetic side (0 = automatic, cache-sized on CPU)", rich_help_panel="Condensation")] = 0,
    real_precision: Annotated[str, typer.Option(help="real-side network forward: fp32, bf16 or auto (bf16 where native)", rich_help_panel="Condensation")] = "auto",
    dsa: Annotated[str, typer.Option(help="DSA strategy or 'none'", rich_help_panel="Condensation")] = DSA_DEFAULT,
    grad_weight: Annotated[float, typer.Option(help="weight of the DP gradient-matching term (0 = off)", rich_help_panel="Condensation")] = 0.0,
    epsilon: Annotated[str, typer.Option(help="DP target epsilon (inf = not private)", rich_help_panel="Privacy")] = "inf",
    delta: Annotated[Optional[str], typer.Option(help="DP delta (default: below 1/N)", rich_help_panel="Privacy")] = None,
    accountant: Annotated[str, typer.Option(help="rdp or prv", rich_help_panel="Privacy")] = "rdp",
    clip: Annotated[float, typer.Option(help="per-term clipping bound C_k in DP mode", rich_help_panel="Privacy")] = 1.0,
    sample_rate: Annotated[Optional[str], typer.Option(help="DP: Poisson rate q of each release (default: the signal-to-noise rule, chosen from epsilon, delta and --releases only)", rich_help_panel="Privacy")] = None,
    counts: Annotated[str, typer.Option(help="DP: class counts 'released' through the mechanism (accounted) or declared 'public' by you", rich_help_panel="Privacy")] = "released",
    prototype_share: Annotated[Optional[float], typer.Option(help="DP: share of epsilon for the per-class mean images that initialise S (0 = noise init; default 0.8)", rich_help_panel="Privacy")] = None,
    prototype_clusters: Annotated[Optional[str], typer.Option(help="DP: auto (default: the prototype share releases IPC sub-class centres per class through DP Lloyd rounds when every class is large enough, else class means), or K (1 = class means only)", rich_help_panel="Privacy")] = None,
    subspace: Annotated[Optional[int], typer.Option(help="DP: release the distribution statistics in the K-dimensional subspace spanned by each network's features of the DP prototypes (post-processing, no privacy cost; 0 = full features)", rich_help_panel="Privacy")] = None,
    reuse: Annotated[int, typer.Option(help="optimisation steps per release of the statistics bank (1 = fresh real batch every step, as DM; default 4, chosen by time to accuracy; DP: at most 100 releases)", rich_help_panel="Condensation")] = 4,
    releases: Annotated[Optional[int], typer.Option(help="releases R of the statistics bank (default: iterations/reuse, at most 100 in DP mode); only releases touch real data", rich_help_panel="Condensation")] = None,
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

    With the audit (default) about 20 % of the training data (each example by a hash of its
    own bytes) is held out as non-members before condensing, the release is attacked, and it is exported only if
    every certification gate passes (exit 1 otherwise; the report is written either way).
    """
    options = dict(locals())  # first: only the options are local yet
    from securedc.release import release

    _setup_logging(options.pop("verbose"))
    config, run = _release_request(options)
    device = f"device: {config.resolved_device}" + (" (--device auto)" if config.device == "auto" else "")
    with Renderer(console, preamble=device) as render:
        done = release(config, progress=render, **run)
    if done is None:  # a rank other than 0 of a torchrun launch: rank 0 reports
        return
    if done.report is not None and done.audit is not None:
        print_gates(console, done.audit.certification, done.report)
    if done.written:
        print_summary(done.manifest, done.owner, done.path)
    done.check()


@app.command()
@friendly_errors
def evaluate(
    file: Annotated[Path, typer.Argument(help="condensed .safetensors file")],
    dataset: Annotated[Optional[str], typer.Option(help="test data (default: the manifest's dataset)")] = None,
    data_root: Annotated[Optional[Path], typer.Option()] = None,
    models: Annotated[int, typer.Option(help="fresh models")] = 3,
    epochs: Annotated[int, typer.Option(help="epochs per model")] = 300,
    model: Annotated[str, typer.Option(help="architecture")] = "convnet",
    dsa: Annotated[str, typer.Option(help="training augmentation: a DSA strategy, or 'none' (the plain protocol: no augmentation)")] = DSA_DEFAULT,
    labels: Annotated[str, typer.Option(help="'auto': the file's soft labels (KD loss) when it has them, else its labels; 'hard': its labels only")] = "auto",
    adv_train_eps: Annotated[str, typer.Option(help="train adversarially (fast AT: FGSM from a random start, the robustness audit's recipe) at this L-inf radius, e.g. 8/255; 0 = standard training")] = "0",
    seed: Annotated[int, typer.Option()] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Train fresh models on a condensed file and report test accuracy.

    A file written with --soft-labels is trained on its soft labels (the KD loss), as the
    plugins do; --labels hard ignores them. --dsa none gives the plain protocol (no augmentation).
    """
    import dataclasses

    from securedc.api import as_bundle
    from securedc.config import EvalConfig, parse_number, seed_problem
    from securedc.errors import Problem
    from securedc.evaluate import evaluate_set
    from securedc.export import check_compatible, dataset_of, load_condensed
    from securedc.robust import PGDRecipe

    config = EvalConfig(models=models, epochs=epochs, model=model, dsa=dsa)
    own_flags = {"eval.models": "--models", "eval.epochs": "--epochs", "eval.model": "--model"}  # this command's names
    problems = [dataclasses.replace(p, field=own_flags.get(p.field, p.field)) for p in config.problems()]
    problems += [p for p in (seed_problem(seed, "--seed"),) if p is not None]
    if labels not in ("auto", "hard"):
        problems.append(Problem("--labels", f"must be 'auto' or 'hard' (got {labels!r})"))
    eps = parse_number(adv_train_eps, name="--adv-train-eps")
    if not 0 <= eps <= 1:
        problems.append(Problem("--adv-train-eps", f"must be in [0, 1] in pixel units, e.g. 8/255 (got {adv_train_eps})"))
    if problems:
        raise ConfigError(problems=problems)
    recipe = PGDRecipe.fast(eps) if eps > 0 else None
    cs = load_condensed(file)
    bundle = as_bundle(dataset_of(cs, dataset, file), root=str(data_root) if data_root else None)
    check_compatible(cs, bundle, file)
    soft = cs.soft_labels if labels == "auto" else None
    res = evaluate_set(
        cs.images, cs.labels, bundle.test_images, bundle.test_labels, num_classes=bundle.num_classes,
        mean=bundle.mean, std=bundle.std, config=config, seed=seed, soft_labels=soft, adversarial=recipe,
    )
    protocol = {"labels": "soft" if soft is not None else "hard", "dsa": dsa,
                "training": "standard" if recipe is None else recipe.describe()}
    if json_out:
        typer.echo(json.dumps({**res.to_dict(), **protocol}))
    else:
        how = f"{protocol['labels']} labels, augmentation {dsa}" + ("" if recipe is None else f", fast AT at {adv_train_eps}")
        Console().print(f"{file}: test accuracy {res}; {how}", markup=False)


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
    from securedc.owner import owner_path
    from securedc.reaudit import audit_file

    _setup_logging(verbose)
    with Renderer(console) as render:
        checked = audit_file(
            file, data=dataset, root=data_root, policy=policy, recertify=recertify, report_dir=report,
            audit=_audit_config(audit_shadows, audit_canaries, audit_iterations),
            eval_config=_eval_config(eval_models, eval_epochs), progress=render,
        )
    print_gates(console, checked.audit.certification, checked.report)
    if checked.recertified:
        console.print(f"manifest of {file} updated: certified = {checked.certified}; "
                      f"audit numbers in {owner_path(file)}")
    checked.check()


def _manifest_table(file: Path, cs: Any, own: dict[str, Any], row: tuple[str, str]) -> Table:
    """``securedc inspect``'s table of a loaded file and its owner record (``KeyError`` etc. on a mangled manifest)."""
    m = cs.manifest
    own_ds = own.get("dataset") or {}
    table = Table(title=str(file), show_header=False)
    table.add_row(*row)
    dataset_txt = cs.dataset_name or "(not recorded)"
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
    if cs.soft_labels is not None:
        teacher = m.get("soft_label_teacher") or {}
        how = ", ".join(f"{k}={v}" for k, v in teacher.items() if isinstance(v, (str, int, float))) or "not recorded"
        table.add_row("soft labels", f"{tuple(cs.soft_labels.shape)}, mean top probability "
                      f"{float(cs.soft_labels.max(dim=1).values.mean()):.2f} (trained on with the KD loss); teacher: {how}")
    audit = m.get("audit", {})
    table.add_row("audit", ("certified" if audit.get("certified") else "NOT certified")
                  + ("" if audit.get("ran") else " (audit not run)") + (" (forced export)" if audit.get("forced") else ""))
    for reason in (own.get("audit") or {}).get("reasons", []):
        table.add_row("audit reason", str(reason))
    ev = own.get("evaluation") or {}
    if ev:
        table.add_row("accuracy", f"{100*ev['condensed']['mean']:.1f} ± {100*ev['condensed']['std']:.1f} % vs random {100*ev['random_subset']['mean']:.1f} %")
    return table


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
        row = owner_row(owner, file)
    except DataError as err:  # unreadable or another release's record: show the release alone
        owner, row = None, ("owner file", str(err))
    try:
        table = _manifest_table(file, cs, owner or {}, row)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # a manifest another tool wrote or edited
        raise DataError(f"{file}: its manifest lacks or mangles a field securedc writes "
                        f"({type(err).__name__}: {err})") from None
    Console().print(table)
    if grid is not None:
        save_image_grid(grid, cs.images, cs.labels, classes=(m.get("dataset") or {}).get("classes"))
        Console().print(f"image grid written to {grid}")


@app.command()
@friendly_errors
def extractor(
    out: Annotated[Path, typer.Argument(help="weights file to write (.safetensors)")],
    dataset: Annotated[str, typer.Option(help="the data you declare PUBLIC (same sources as condense)")] = "digits",
    data_root: Annotated[Optional[Path], typer.Option()] = None,
    adv_eps: Annotated[str, typer.Option(help="L-inf radius of adversarial training, e.g. 8/255")] = "8/255",
    images: Annotated[int, typer.Option(help="training images used (a seeded subset; 0 = all)")] = 10_000,
    epochs: Annotated[int, typer.Option(help="adversarial-training epochs (0 = about 240 optimisation steps, at least 3)")] = 0,
    model: Annotated[str, typer.Option(help="architecture (the condensation run's --model)")] = "convnet",
    test_images: Annotated[int, typer.Option(help="test images attacked (PGD-20) for the recorded accuracy")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Adversarially train a robust extractor / teacher on data you declare PUBLIC, for --robust-extractor.

    Nothing here is privacy-accounted: never give it the private data of a DP release. For a
    non-private release the training data itself may be used. The file records the dataset and
    the network's clean and PGD-20 accuracy on its test split.
    """
    from securedc.api import as_bundle
    from securedc.config import model_problem, parse_number, seed_problem
    from securedc.errors import Problem
    from securedc.io import ensure_writable_dir
    from securedc.public_extractor import check_extractor_options, fit_public_extractor, score_text

    _setup_logging(verbose)
    eps = parse_number(adv_eps, name="--adv-eps")
    check_extractor_options(eps=eps, images=images, epochs=epochs, test_images=test_images)
    problems = [p for p in (model_problem(model, "--model"), seed_problem(seed, "--seed")) if p is not None]
    if out.is_dir():
        problems.append(Problem("OUT", f"{out} is a directory; give a file name, e.g. {out / 'extractor.safetensors'}"))
    if problems:
        raise ConfigError(problems=problems)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    bundle = as_bundle(dataset, root=str(data_root) if data_root else None)
    with console.status(f"adversarially training {model} on {bundle.name} (eps {adv_eps}, epochs {epochs or 'auto'})"):
        fitted = fit_public_extractor(bundle, eps=eps, images=images, epochs=epochs, seed=seed, model=model,
                                      test_images=test_images)
    fitted.save(out)
    d = fitted.description
    console.print(f"{out}: {d['train_images']} images of {bundle.name} (declared public), {d['training_seconds']:.0f} s; "
                  f"{score_text(d)} (PGD at {adv_eps})")


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


def main() -> None:
    """The ``securedc`` entry point: :data:`app`, with a usage error as one line on stderr and exit code 2.

    Typer's parser errors (click's ``UsageError`` family; Typer may vendor click) are recognised by
    their interface (``format_message``, ``exit_code``), not by import path.
    """
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.secho("interrupted", err=True, fg="yellow")
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a parser error
        if not (hasattr(err, "format_message") and isinstance(getattr(err, "exit_code", None), int)):
            raise
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `securedc`: the help is already shown
            raise SystemExit(2) from None
        where = f" (see securedc {ctx.info_name} --help)" if ctx is not None and ctx.parent is not None else ""
        typer.secho(f"error: {err.format_message().splitlines()[0]}{where}", err=True, fg="red")
        raise SystemExit(err.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
