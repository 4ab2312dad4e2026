"""Rich rendering for the CLI: live progress from the library's notices, the gate table, the summary.

The library reports through a callback (:mod:`securedc.notices`); :class:`Renderer` is that
callback for a terminal. Only the CLI imports this module (the library never prints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.status import Status
from rich.table import Table

from securedc.notices import Notice

__all__ = ["Renderer", "owner_row", "print_gates", "print_summary"]


class Renderer:
    """A ``progress`` callback drawing notices and step events on ``console`` (stderr).

    A ``condense`` notice opens a progress bar that :class:`~securedc.condenser.ProgressEvent` s
    advance (every 10th step, the last, and every step that spends ε); ``audit`` opens a status
    line that ``status`` notices update; ``info`` and ``warning`` notices are printed.
    Use it as a context manager so a bar or status line is closed on errors too.

    Args:
        console: where to draw.
        preamble: a line printed when the optimisation loop starts (after the data is loaded and
            every option checked, so a bad input still gets one line).
    """

    def __init__(self, console: Console, *, preamble: str | None = None) -> None:
        self.console = console
        self.preamble = preamble
        self._bar: Progress | None = None
        self._task: Any = None
        self._status: Status | None = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._status is not None:
            self._status.stop()
        self._bar = self._status = None

    def _open_bar(self, notice: Notice) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[eps]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(escape(notice.text), total=notice.total, loss="-", eps="")

    def _step(self, ev: Any) -> None:
        if self._bar is not None and (ev.epsilon_spent is not None or ev.step % 10 == 0 or ev.step == ev.total):
            eps = f"ε {ev.epsilon_spent:.2f}" if ev.epsilon_spent is not None else ""
            self._bar.update(self._task, completed=ev.step, loss=f"{ev.loss:.4g}", eps=eps)

    def _line(self, notice: Notice) -> None:
        style = "yellow" if notice.kind == "warning" else "bold"
        if notice.label:
            self.console.print(f"[{style}]{escape(notice.label)}[/{style}]: {escape(notice.text)}")
        else:
            self.console.print(f"[yellow]{escape(notice.text)}[/yellow]" if style == "yellow" else escape(notice.text))

    def __call__(self, event: Any) -> None:
        if not isinstance(event, Notice):
            self._step(event)
        elif event.kind == "condense":
            if self.preamble:
                self.console.print(self.preamble)
            self._open_bar(event)
        elif event.kind == "audit":
            self._status = self.console.status(escape(event.text))
            self._status.start()
        elif event.kind == "status" and self._status is not None:
            self._status.update(escape(event.text))
        elif event.kind in ("condensed", "audited"):
            self._close()
        elif event.kind in ("info", "warning"):
            self._line(event)


def print_gates(console: Console, certification: Any, html: Path) -> None:
    """The certification gates as a table, then where the report is."""
    table = Table(title="audit: " + ("CERTIFIED" if certification.certified else "NOT CERTIFIED"))
    for col in ("gate", "result", "reason"):
        table.add_column(col)
    for g in certification.gates:
        table.add_row(g.name, "[green]pass[/green]" if g.passed else "[red]FAIL[/red]", g.reason)
    console.print(table)
    console.print(f"report: {html}")


def owner_row(owner: dict[str, Any] | None, target: Path) -> tuple[str, str]:
    """The table row naming the owner record (or saying it was not found)."""
    from securedc.owner import owner_path

    if owner is None:
        return "owner file", f"owner file not found ({owner_path(target).name}); numbers measured on real data are unavailable"
    return "owner file", f"{owner_path(target)} (owner only: fingerprint, counts, audit and evaluation numbers)"


def print_summary(manifest: dict[str, Any], owner: dict[str, Any] | None, target: Path) -> None:
    """The table printed after ``condense`` (stdout): public facts from the release, measured numbers from the owner record."""
    own = owner or {}
    table = Table(title="securedc condense", show_header=False)
    table.add_row("output", str(target))
    table.add_row(*owner_row(owner, target))
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
