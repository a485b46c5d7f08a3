"""A study's report: best trial, top-10 table, CSV export and Optuna's plots as PNG files."""

from __future__ import annotations

import csv
import io
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ferlab.common.files import write_json_atomic, write_text_atomic
from ferlab.common.plots import save_figure
from ferlab.errors import ConfigError
from ferlab.evaluation.metrics import percent

PLOTS = {
    "history.png": "plot_optimization_history",
    "importances.png": "plot_param_importances",
    "parallel.png": "plot_parallel_coordinate",
    "slices.png": "plot_slice",
}
TOP = 10
OBJECTIVE = "validation accuracy"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state."""
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.value, reverse=True)


def top_table(study: optuna.Study, top: int = TOP) -> str:
    """A Markdown table of the ``top`` best completed trials and their parameters."""
    trials = completed(study)[:top]
    if not trials:
        return "(no completed trial yet)"
    keys = sorted({key for trial in trials for key in trial.params})
    header = ["rank", "trial", "val accuracy", "epochs", *keys]
    rows = [
        [str(rank), str(t.number), percent(t.value), str(len(t.intermediate_values)),
         *(_fmt(t.params.get(key, "")) for key in keys)]
        for rank, t in enumerate(trials, 1)
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def best_text(study: optuna.Study) -> str:
    """The best trial, its validation accuracy and its hyperparameters."""
    trials = completed(study)
    if not trials:
        return "no completed trial yet"
    best = trials[0]
    lines = [f"best trial {best.number}: validation accuracy {percent(best.value)}"]
    lines += [f"  {key} = {_fmt(value)}" for key, value in sorted(best.params.items())]
    return "\n".join(lines)


def export_csv(study: optuna.Study, path: Path) -> Path:
    """Every trial as one CSV row: number, state, value, times, parameters, notes."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({key for trial in trials for key in trial.params})
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["number", "state", "value", "epochs", "seconds", "start", *keys, "note"])
    for t in trials:
        note = t.user_attrs.get("error") or t.user_attrs.get("pruned_reason") or ""
        writer.writerow([
            t.number, t.state.name, "" if t.value is None else t.value,
            len(t.intermediate_values), t.user_attrs.get("seconds", ""),
            t.datetime_start.isoformat() if t.datetime_start else "",
            *(t.params.get(key, "") for key in keys), note,
        ])  # fmt: skip
    return write_text_atomic(path, handle.getvalue())


def _slice_params(study: optuna.Study, most: int = 4) -> list[str]:
    """The ``most`` most important parameters (all of them when importances cannot be had)."""
    names = sorted({key for trial in completed(study) for key in trial.params})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = list(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        pass
    return names[:most]


def write_plots(study: optuna.Study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib plots as PNG files; returns the files and why any was skipped.

    The objective is labelled "validation accuracy"; the slice plot shows the four most
    important parameters, each panel about 3.5 inches wide, so that labels stay readable.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as optuna_plots

    written, skipped = [], []
    for name, function in PLOTS.items():
        try:
            kwargs = {"params": _slice_params(study)} if function == "plot_slice" else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(optuna_plots, function)(study, target_name=OBJECTIVE, **kwargs)
            panels = np.atleast_1d(axes).ravel()
            figure = panels[0].figure
            width = 3.5 * len(panels) + 1 if function == "plot_slice" else 9.0
            figure.set_size_inches(width, 5.0 if function != "plot_slice" else 4.0)
            for ax in figure.axes:
                ax.tick_params(labelsize=9)
                for label in ax.get_xticklabels():
                    label.set_rotation(30 if function == "plot_parallel_coordinate" else 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure.tight_layout()
                save_figure(figure, out_dir / name, dpi=100)
            plt.close(figure)
            written.append(out_dir / name)
        except Exception as exc:  # e.g. importances need two completed trials with varied params
            skipped.append(
                f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
    return written, skipped


def steps_text(steps: list[dict]) -> str:
    """A sequential search's steps: winner and validation accuracy of each."""
    lines = ["| step | study | finished | val accuracy | winner |", "|---|---|---|---|---|"]
    for step in steps:
        acc = "-" if step["val_accuracy"] is None else percent(step["val_accuracy"])
        winner = ", ".join(f"{k} = {_fmt(v)}" for k, v in step["values"].items()) or "(none)"
        lines.append(
            f"| {step['step']} | {step['study']} | {step['finished']} | {acc} | {winner} |"
        )
    return "\n".join(lines)


def best_so_far(study: optuna.Study) -> list[dict]:
    """The best validation accuracy as trials finished: one row per trial that raised it.

    Rows: ``{"finished": finished trials so far, "minutes": since the first trial started,
    "trial": number, "val_accuracy": value}``, in completion order.
    """
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete
    ]
    if not done:
        return []
    start = min(t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start)
    rows, best = [], None
    for finished, t in enumerate(sorted(done, key=lambda t: t.datetime_complete), start=1):
        if t.state == TrialState.COMPLETE and (best is None or t.value > best):
            best = t.value
            minutes = (t.datetime_complete - start).total_seconds() / 60
            rows.append(
                {"finished": finished, "minutes": round(minutes, 2), "trial": t.number,
                 "val_accuracy": t.value}
            )  # fmt: skip
    return rows


def write_report(study: optuna.Study, out_dir: str | Path, *, csv_export: bool = False) -> str:
    """Write report.md, best.json, the plots (and trials.csv) into ``out_dir``; return the text."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = study.user_attrs.get("ferlab", {})
    counts = summary_counts(study)
    parts = [
        f"# Study {study.study_name} ({meta.get('mode', '?')} search)",
        "trials: " + (", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"),
    ]
    if meta.get("mode") == "sequential":
        steps = study.user_attrs.get("steps")
        if not steps:
            raise ConfigError(f"sequential study {study.study_name!r} has not finished a run yet")
        parts += ["## Steps", steps_text(steps)]
    else:
        parts += ["## Best", best_text(study), f"## Top {TOP}", top_table(study)]
        written, skipped = write_plots(study, out_dir)
        parts.append("plots: " + (", ".join(p.name for p in written) or "none"))
        parts += [f"  skipped {note}" for note in skipped]
        best = completed(study)
        if best:
            top = best[0]
            payload = {
                "number": top.number,
                "val_accuracy": top.value,
                "params": top.params,
                "config": top.user_attrs.get("config"),
                "best_so_far": best_so_far(study),
            }
            write_json_atomic(out_dir / "best.json", payload)
    if csv_export:
        parts.append(f"trials exported to {export_csv(study, out_dir / 'trials.csv')}")
    text = "\n\n".join(parts) + "\n"
    write_text_atomic(out_dir / "report.md", text)
    return text


def best_config(study: optuna.Study) -> tuple[dict, str]:
    """The training config to retrain: the best trial's, or a sequential search's final one."""
    meta = study.user_attrs.get("ferlab", {})
    if meta.get("mode") == "sequential":
        if "config" not in study.user_attrs:
            raise ConfigError(f"sequential study {study.study_name!r} has not finished a run yet")
        return study.user_attrs["config"], "the sequential search's final settings"
    trials = completed(study)
    if not trials:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to retrain")
    return trials[0].user_attrs[
        "config"
    ], f"trial {trials[0].number} (val {percent(trials[0].value)})"


def retrain_best(study: optuna.Study, out_dir: str | Path, *, verbose: bool = True) -> dict:
    """Train the study's best configuration into ``out_dir`` and evaluate every test split.

    Each test split's report goes to ``out_dir/<split>/``; returns the run's summary with
    ``<split>_accuracy`` added for each split that could be evaluated.
    """
    from ferlab.data import dataset_spec
    from ferlab.errors import DataError
    from ferlab.evaluation.scoring import evaluate_split
    from ferlab.inference.models import load_model
    from ferlab.runs.fc import run_training
    from ferlab.settings import TrainSettings, parse_config

    config, what = best_config(study)
    settings = parse_config(config, TrainSettings)
    print(f"retraining {what} of study {study.study_name}", file=sys.stderr)
    out = Path(out_dir)
    summary = run_training(settings, out, verbose=verbose)
    classifier = load_model(out / "model.npz")
    for split in dataset_spec(settings.data.dataset).test_splits:
        try:
            report = evaluate_split(classifier, settings.data.path, split, out_dir=out / split)
        except (ConfigError, DataError) as exc:
            print(f"ferlab: note: {split}: {exc}", file=sys.stderr)
            continue
        summary[f"{split}_accuracy"] = report.accuracy
    write_json_atomic(out / "summary.json", summary)
    return summary
