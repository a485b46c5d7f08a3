"""What ``ferlab analyse`` tells as it goes and at the end: the progress line, the summary and
each video's emotion timeline."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

PLAIN_PROGRESS_S = 30.0  # a plain progress line this often when stderr is not a terminal
TTY_PROGRESS_S = 0.25
EXAMPLES = 3  # names given per skip reason in the summary


@dataclass
class Summary:
    """What a run did: inputs found, analysed now, already done, redone because they changed,
    skipped (by reason, with examples), left for the next run, faces and emotions."""

    found: int = 0
    analysed: int = 0
    already_done: int = 0
    redone: int = 0
    left: int = 0
    faces: int = 0
    frames: int = 0
    videos: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    emotions: Counter = field(default_factory=Counter)
    timelines: list[str] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    driver_cpu_seconds: float = 0.0

    def skip(self, name: str, reason: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append(name)

    def to_dict(self) -> dict:
        record = {k: getattr(self, k) for k in ("found", "analysed", "already_done", "redone",
                                                "left", "faces", "frames", "videos", "chunks")}  # fmt: skip
        record["skipped"] = dict(self.skipped.most_common())
        record["skipped_examples"] = self.examples
        record["emotions"] = dict(self.emotions.most_common())
        record["timelines"] = self.timelines
        record["seconds"] = round(self.seconds, 2)
        record["inputs_per_second"] = round(self.analysed / max(self.seconds, 1e-9), 2)
        record["driver_cpu_seconds"] = round(self.driver_cpu_seconds, 3)
        return record

    def text(self) -> str:
        """The summary as lines for a person."""
        lines = [
            f"{self.found:,} inputs: {self.analysed:,} analysed in {self.seconds:.1f} s "
            f"({self.analysed / max(self.seconds, 1e-9):.1f}/s), {self.already_done:,} already "
            f"done, {self.redone:,} of them redone as changed"
        ]
        if self.videos:
            lines.append(f"{self.videos:,} videos, {self.frames:,} frames analysed")
        lines.append(f"{self.faces:,} faces")
        if self.emotions:
            total = sum(self.emotions.values())
            lines.append("emotions: " + ", ".join(
                f"{e} {n:,} ({n / total:.0%})" for e, n in self.emotions.most_common()))  # fmt: skip
        for reason, count in self.skipped.most_common():
            shown = ", ".join(self.examples.get(reason, []))
            lines.append(f"skipped {count:,}: {reason} (e.g. {shown})")
        if self.left:
            lines.append(f"{self.left:,} inputs whose worker was lost too often are left for the "
                         "next run of the same command")  # fmt: skip
        if self.timelines:
            lines.append(f"{len(self.timelines)} video timelines (PNG) in timelines/")
        return "\n".join(lines)


class Progress:
    """One progress line: redrawn in place on a terminal, a plain line now and then otherwise."""

    def __init__(self, stream: TextIO, *, enabled: bool, every: float, total=None) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and stream.isatty()
        self.every = TTY_PROGRESS_S if self.tty else every
        self.total = total or (lambda: None)
        self.started = self.last = time.monotonic()

    def tick(self, summary: Summary, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate, face_rate = summary.analysed / elapsed, summary.faces / elapsed
        total = self.total()
        processed = summary.analysed + summary.already_done - summary.redone
        left = None
        if total is not None and rate > 0:
            left = max(0, total - processed - summary.left) / rate
        line = (
            f"{processed:,}"
            + (f"/{total:,}" if total is not None else "")
            + f" inputs ({rate:.1f}/s), {summary.faces:,} faces ({face_rate:.1f}/s)"
            + f", {sum(summary.skipped.values()):,} skipped"
            + (f", {_duration(left)} left" if left is not None else "")
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(78) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def save_timeline(rows: list[dict], class_names: list[str], path: Path, title: str) -> bool:
    """Each track's emotion probabilities over time as a PNG; False when there is no face."""
    series: dict[int, list] = {}
    for row in rows:
        if row.get("track") is not None:
            probs = {c: row[f"prob_{c}"] for c in class_names}
            series.setdefault(row["track"], []).append((row["time"], probs))
    if not series:
        return False
    from ferlab.common.plots import plot_emotion_timeline

    path.parent.mkdir(parents=True, exist_ok=True)
    plot_emotion_timeline(series, class_names, path, title=title)
    return True


def timeline_path(folder: Path, name: str) -> Path:
    """Where the timeline of video ``name`` goes: its path mirrored under ``timelines/``."""
    parts = [p for p in Path(name).parts if p not in ("/", "..", ".")]
    return folder / "timelines" / (Path(*parts).as_posix() + ".png")
