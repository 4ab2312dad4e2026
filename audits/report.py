"""Audit report: one self-contained ``report.html`` plus ``report.json`` with every number shown.

Layout (readable in a minute): verdict table first, then the synthetic images per
class, privacy (ε, δ, σ, ε spent over steps, what the guarantee does not cover),
membership inference (ROC in log-log, TPR@FPR table with 95 % CIs), the canary audit,
robustness (table, accuracy vs ε, sanity checks) when present, and utility.

Plots are matplotlib ``Figure`` objects rendered with ``FigureCanvasAgg`` (no pyplot
global state) and inlined as base64 PNG ``data:`` URIs; every string from data or
configuration is HTML-escaped. Both files are written atomically and readable by their owner
only (``0o600``).

The report is for the data owner: its numbers (accuracy, membership inference, canaries, the
member split, the dataset fingerprint) are measured on the private data and are not covered by
the release's (ε, δ). Both files say so; never publish them with the release.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from securedc.audits import names as N
from securedc.audits.base import AuditResult, json_ready
from securedc.audits.certify import Certification

__all__ = ["write_report", "render_html", "report_data", "epsilon_history_from_privacy", "OWNER_ONLY_NOTE"]

#: Shown at the top of report.html and stored in report.json.
OWNER_ONLY_NOTE = (
    "For the data owner only: this report holds numbers measured on the private data (audit and "
    "evaluation results, the member split, the dataset fingerprint). They are not covered by the "
    "release's differential-privacy guarantee; do not publish this report with the release."
)

_REPORT_MODE = 0o600

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
background:#fff;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;
vertical-align:top}th{background:#f2f2f2}.pass{color:#0a6b0a;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.banner{padding:12px 16px;border-radius:6px;font-size:1.2em;margin:12px 0}.banner.pass{background:#e3f6e3}
.banner.fail{background:#fde7ea}.banner.owner{background:#fff4d6;font-size:1em}.num{font-variant-numeric:tabular-nums;text-align:right}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.92em}
"""


# ---------------------------------------------------------------- helpers
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if float(v).is_integer() and abs(v) < 1e12:
            return str(int(v))
        return f"{v:.{digits}g}"
    return _e(value)


def _pct(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    return "n/a" if math.isnan(v) else f"{100 * v:.1f} %"


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """Rows are pre-escaped HTML cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


# ---------------------------------------------------------------- plots
def _image_grid(images: Tensor, labels: Tensor, classes: Sequence[str], *, max_per_class: int = 10) -> str:
    """One mosaic image (a row per class, white gaps) on a single axes: one ``imshow`` instead of a
    subplot per image, which took seconds for 100 images."""
    from matplotlib.figure import Figure

    x = images.detach().cpu().float().clamp(0, 1)
    y = labels.detach().cpu()
    present = sorted(int(c) for c in torch.unique(y))
    rows = present[:20]
    cols = max(1, min(max_per_class, max(int((y == c).sum()) for c in rows)))
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    gap = max(1, h // 8)
    colour = 1 if ch == 1 else 3
    mosaic = torch.ones(colour, len(rows) * (h + gap) - gap, cols * (w + gap) - gap)
    for r, c in enumerate(rows):
        for k, i in enumerate((y == c).nonzero().flatten()[:cols].tolist()):
            top, left = r * (h + gap), k * (w + gap)
            mosaic[:, top : top + h, left : left + w] = x[i, :colour]
    fig = Figure(figsize=(0.9 * cols + 1.4, 0.9 * len(rows) + 0.2))
    ax = fig.add_axes((0.12, 0.01, 0.87, 0.98))
    if colour == 1:
        ax.imshow(mosaic[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(len(rows))])
    ax.set_yticklabels([str(classes[c] if c < len(classes) else c)[:14] for c in rows], fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    note = "" if len(present) <= 20 else f'<p class="note">first 20 of {len(present)} classes shown</p>'
    return _png(fig) + note


def _eps_plot(history: Sequence[Sequence[float]], target: float | None) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    steps = [h[0] for h in history]
    eps = [h[1] for h in history]
    ax.plot(steps, eps, marker=".", label="ε spent")
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="red", linestyle="--", label=f"target ε = {target:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("ε")
    ax.set_title("privacy spent over steps")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _roc_plot(attacks: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    floor = 1e-4
    for name, a in attacks.items():
        roc = a.get("roc") or {}
        fpr = [max(float(v), floor) for v in roc.get("fpr", [])]
        tpr = [max(float(v), floor) for v in roc.get("tpr", [])]
        if fpr:
            ax.plot(fpr, tpr, label=f"{name} (AUC {float(a.get('auc', math.nan)):.3f})")
    grid = [floor, 1.0]
    ax.plot(grid, grid, color="gray", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("membership inference ROC (log-log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _acc_eps_plot(curve: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    eps = [float(e) for e in curve.get("eps", [])]
    for key in ("condensed", "baseline", "dp_baseline", "condensed_at", "baseline_at", "dp_baseline_at"):
        vals = curve.get(key)
        if vals:
            ax.plot(eps[: len(vals)], [float(v) for v in vals], marker="o", label=key)
    ax.set_xlabel("L∞ attack radius ε")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs attack radius (PGD)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


# ---------------------------------------------------------------- sections
def _privacy_section(manifest: dict[str, Any], history: Sequence[Sequence[float]]) -> str:
    priv = manifest.get("privacy") or {}
    parts = ['<h2 id="privacy">Privacy</h2>']
    if not priv.get("private"):
        parts.append('<p class="fail">NOT differentially private: the synthetic set is computed from exact '
                     "statistics of the real data (and, with real initialisation, starts from real images). "
                     "Use <code>--epsilon</code> for a guarantee.</p>")
        return "".join(parts)
    rows = [
        ["ε (spent)", _fmt(priv.get("epsilon"))],
        ["target ε", _fmt(priv.get("target_epsilon"))],
        ["δ", _fmt(priv.get("delta"))],
        ["noise multiplier σ", _fmt(priv.get("noise_multiplier"))],
        ["sampling rate q", _fmt(priv.get("sample_rate"))],
        ["steps T", _fmt(priv.get("steps"))],
        ["sensitivity C", _fmt(priv.get("sensitivity"))],
        ["accountant", _e(f"{priv.get('accountant')} (opacus {priv.get('opacus_version', '?')})")],
        ["mechanism", _e(priv.get("mechanism", ""))],
    ]
    parts.append(_table(["quantity", "value"], rows, cls="privacy"))
    if history:
        parts.append(_eps_plot(history, priv.get("target_epsilon")))
    nc = priv.get("not_covered") or []
    if nc:
        parts.append("<h3>What the guarantee does not cover</h3><ul>" + "".join(f"<li>{_e(x)}</li>" for x in nc) + "</ul>")
    return "".join(parts)


def _mia_section(r: AuditResult) -> str:
    attacks = r.details.get("attacks") or {}
    parts = ['<h2 id="mia">Membership inference</h2>']
    tm = r.details.get("threat_model")
    if tm:
        parts.append(f'<p class="note">{_e(tm)}</p>')
    if attacks:
        parts.append(_roc_plot(attacks))
    rows = []
    for name, a in attacks.items():
        def ci(key: str, pct: bool = True) -> str:
            f = _pct if pct else (lambda v: _fmt(v, 3))
            return f"{f(a.get(key))} [{f(a.get(N.ci_low(key)))}, {f(a.get(N.ci_high(key)))}]"

        rows.append([_e(name), ci(N.AUC, pct=False), ci(N.TPR_AT_1PCT_FPR), ci(N.TPR_AT_0_1PCT_FPR),
                     ci(N.BALANCED_ACCURACY)])
    parts.append(_table(["attack", "AUC [95 % CI]", "TPR @ 1 % FPR [CI]", "TPR @ 0.1 % FPR [CI]",
                         "balanced accuracy [CI]"], rows, cls="mia"))
    d = r.details
    parts.append(f'<p class="note">{_e(d.get("num_members", "?"))} member / {_e(d.get("num_nonmembers", "?"))} '
                 f"non-member targets; {_e(d.get('shadows', 0))} shadow condensation(s); worst attack "
                 f"{_e(d.get('worst_attack', '?'))}.</p>")
    return "".join(parts)


def _metric_rows(metrics: dict[str, float], *, pct_keys: Sequence[str] = ()) -> list[list[str]]:
    return [[_e(k), _pct(v) if k in pct_keys or k.endswith("_acc") else _fmt(v)] for k, v in metrics.items()]


def _canary_section(r: AuditResult) -> str:
    m = r.metrics
    parts = ['<h2 id="canary">Canary audit (empirical ε lower bound)</h2>',
             '<p class="note">One-run audit (Steinke, Nasr &amp; Jagielski, NeurIPS 2023): canaries are inserted '
             "with probability ½, the set is condensed once, and correct membership guesses of the canaries give a "
             "95 % lower confidence bound ε̂ on the ε the run actually has.</p>"]
    verdict = "" if r.passed is None else f" — {_verdict(bool(r.passed))}"
    parts.append(f"<p>ε̂ = <b>{_fmt(m.get(N.EPSILON_LOWER_BOUND), 3)}</b> vs claimed ε = "
                 f"{_fmt(m.get(N.CLAIMED_EPSILON), 3)}{verdict}</p>")
    parts.append(_table(["metric", "value"], _metric_rows(m), cls="canary"))
    return "".join(parts)


def _robustness_section(r: AuditResult) -> str:
    parts = ['<h2 id="robustness">Robustness</h2>']
    m = r.metrics
    keys = [k for k in m if k.endswith("_acc") and not k.startswith((N.baseline(""), N.dp_baseline("")))]
    private = any(k.startswith(N.dp_baseline("")) for k in m)
    rows = [[_e(k.removesuffix("_acc")), _pct(m.get(k)), _pct(m.get(N.baseline(k), math.nan))]
            + ([_pct(m.get(N.dp_baseline(k), math.nan))] if private else []) for k in keys]
    head = ["evaluation", "condensed S", "random real subset"] + (["DP prototype baseline"] if private else [])
    parts.append(_table(head, rows, cls="robustness"))
    curve = r.details.get("acc_vs_eps")
    if curve and curve.get("eps"):
        parts.append(_acc_eps_plot(curve))
    checks = r.details.get("sanity_checks") or []
    if checks:
        parts.append("<h3>Sanity checks</h3>")
        parts.append(_table(["check", "result", "detail"],
                            [[_e(c.get("name")), _verdict(bool(c.get("passed"))), _e(c.get("detail", ""))] for c in checks],
                            cls="sanity"))
    return "".join(parts)


def _utility_section(r: AuditResult) -> str:
    parts = ['<h2 id="utility">Utility</h2>']
    per = r.details.get("per_architecture") or {}
    rows = []
    for arch, v in per.items():
        c, s = v["condensed"], v["random_subset"]
        rows.append([_e(arch), f"{_pct(c['mean'])} ± {_pct(c['std'])}", f"{_pct(s['mean'])} ± {_pct(s['std'])}",
                     _e(len(c.get("accuracies", [])))])
    parts.append(_table(["architecture", "condensed S", "random real subset (same size)", "models"], rows,
                        cls="utility"))
    proto = r.details.get("protocol") or {}
    if proto:
        parts.append(f'<p class="note">protocol: {_e(", ".join(f"{k}={v}" for k, v in proto.items()))}</p>')
    return "".join(parts)


def _notes(results: dict[str, AuditResult]) -> str:
    items = [f"<li><b>{_e(name)}</b>: {_e(n)}</li>" for name, r in results.items() for n in r.notes]
    return ('<h2 id="notes">Notes</h2><ul>' + "".join(items) + "</ul>") if items else ""


def epsilon_history_from_privacy(privacy: dict[str, Any], *, points: int = 50) -> list[tuple[int, float]]:
    """Recompute ε spent over steps from a manifest's privacy section (σ, q, T, δ, accountant).

    Used when only the saved file is at hand (``securedc audit``); empty for non-private sets.
    """
    if not privacy.get("private"):
        return []
    from securedc.privacy import PrivacyAccountant

    steps = int(privacy["steps"])
    marks = sorted({max(1, round(steps * k / points)) for k in range(1, points + 1)})
    acc = PrivacyAccountant(privacy.get("accountant", "rdp"), delta=float(privacy["delta"]))
    out, done = [], 0
    for mark in marks:
        for _ in range(mark - done):
            acc.step(noise_multiplier=float(privacy["noise_multiplier"]), sample_rate=float(privacy["sample_rate"]))
        done = mark
        out.append((mark, float(acc.epsilon())))
    return out


# ---------------------------------------------------------------- public API
def report_data(
    *,
    manifest: dict[str, Any],
    results: dict[str, AuditResult],
    certification: Certification,
    epsilon_history: Sequence[Sequence[float]] = (),
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document (``report.json``): every number the HTML shows.

    Args:
        manifest: The release's public manifest.
        results: Audit results by name.
        certification: The verdict.
        epsilon_history: ``(step, ε)`` pairs.
        owner: The data owner's record (fingerprint, exact counts, member split; see
            :mod:`securedc.owner`), stored under ``owner``.

    Returns:
        A plain-JSON dict marked ``owner_only``.
    """
    return json_ready({
        "format": "securedc-report",
        "version": 1,
        "owner_only": True,
        "note": OWNER_ONLY_NOTE,
        "certified": certification.certified,
        "certification": certification.to_dict(),
        "results": {k: r.to_dict() for k, r in results.items()},
        "privacy": manifest.get("privacy") or {},
        "epsilon_history": [list(h) for h in epsilon_history],
        "manifest": manifest,
        "owner": owner or {},
    })


def render_html(
    *,
    manifest: dict[str, Any],
    results: dict[str, AuditResult],
    certification: Certification,
    images: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    epsilon_history: Sequence[Sequence[float]] = (),
    owner: dict[str, Any] | None = None,
) -> str:
    """The self-contained HTML report (no external resources), marked owner-only.

    ``owner`` is the data owner's record (see :func:`report_data`); its dataset fingerprint is shown.
    """
    ds = manifest.get("dataset") or {}
    fingerprint = str(((owner or {}).get("dataset") or {}).get("fingerprint") or ds.get("fingerprint") or "n/a")
    title = f"securedc audit report — {ds.get('name', 'dataset')}, {manifest.get('ipc', '?')} image(s) per class"
    ok = certification.certified
    banner = ("CERTIFIED: every gate passed" if ok else
              f"NOT CERTIFIED: {len(certification.failed)} gate(s) failed — "
              + ", ".join(g.name for g in certification.failed))
    gate_rows = [[_e(g.name), _verdict(g.passed), _fmt(g.value), _fmt(g.threshold), _e(g.reason)]
                 for g in certification.gates]
    priv = manifest.get("privacy") or {}
    privacy_txt = (f"(ε={_fmt(priv.get('epsilon'), 3)}, δ={_fmt(priv.get('delta'))})-DP" if priv.get("private")
                   else "not private")
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="banner owner" id="owner-only">{_e(OWNER_ONLY_NOTE)}</div>',
        f'<p class="note">dataset fingerprint {_e(fingerprint[:16])}… · {_e(privacy_txt)} · '
        f"{_e(manifest.get('num_images', images.shape[0]))} images · tensor sha256 "
        f"{_e(str(manifest.get('tensor_sha256', 'n/a'))[:16])}</p>",
        '<h2 id="verdict">Verdict</h2>',
        f'<div class="banner {"pass" if ok else "fail"}">{_e(banner)}</div>',
        _table(["gate", "result", "value", "threshold", "reason"], gate_rows, cls="verdict"),
        '<h2 id="images">Synthetic images per class</h2>',
        _image_grid(images, labels, list(classes)),
        _privacy_section(manifest, epsilon_history),
    ]
    if N.MIA in results:
        parts.append(_mia_section(results[N.MIA]))
    if N.CANARY in results:
        parts.append(_canary_section(results[N.CANARY]))
    if N.ROBUSTNESS in results:
        parts.append(_robustness_section(results[N.ROBUSTNESS]))
    if N.UTILITY in results:
        parts.append(_utility_section(results[N.UTILITY]))
    parts.append(_notes(results))
    parts.append('<p class="note">All numbers are in report.json next to this file.</p></body></html>')
    return "\n".join(parts)


def write_report(
    directory: str | os.PathLike[str],
    *,
    manifest: dict[str, Any],
    results: dict[str, AuditResult],
    certification: Certification,
    images: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    epsilon_history: Sequence[Sequence[float]] = (),
    owner: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.html`` and ``report.json`` into ``directory`` (created if needed), atomically.

    Both files are for the data owner (mode ``0o600``; see :data:`OWNER_ONLY_NOTE`).

    Returns:
        The path of ``report.html``.
    """
    from securedc.io import atomic_write_text, ensure_writable_dir

    out = ensure_writable_dir(directory)
    data = report_data(manifest=manifest, results=results, certification=certification,
                       epsilon_history=epsilon_history, owner=owner)
    page = render_html(manifest=manifest, results=results, certification=certification, images=images,
                       labels=labels, classes=classes, epsilon_history=epsilon_history, owner=owner)
    atomic_write_text(out / "report.json", json.dumps(data, indent=1, sort_keys=False), mode=_REPORT_MODE)
    atomic_write_text(out / "report.html", page, mode=_REPORT_MODE)
    return out / "report.html"
