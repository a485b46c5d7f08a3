"""``ferlab analyse``: the emotions of a whole collection of photos and videos, resumable.

Inputs are walked lazily (folders, files, glob patterns, a --list file), results appended to
--out as Parquet (or CSV, JSONL) chunks written whole or not at all. Run the same command again
to continue after an interruption: inputs already done with the same content are skipped, changed
ones redone. Work runs here, in --workers N processes, or on a Dask cluster (--scheduler,
--cluster), as for ``ferlab search``. docs/collection.md gives the schema and the rules.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ferlab.cli.common import output_folder
from ferlab.vision.detect import DEFAULT_DETECTOR, DETECTORS
from ferlab.vision.track import SMOOTHING_HALF_LIFE


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyse",
        help="emotions of a whole collection of photos and videos, resumable, on a cluster too",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="folders (walked with their sub-folders), files or glob patterns "
                        "('photos/**/*.jpg', quoted)")  # fmt: skip
    parser.add_argument("--list", metavar="FILE", help="also the paths in FILE, one per line "
                        "('-': standard input)")  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder of the results; the same folder again continues the run")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it is a non-empty folder of other files")  # fmt: skip
    parser.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                        help="format of the result chunks")  # fmt: skip
    parser.add_argument("--hash", action="store_true",
                        help="know inputs by a SHA-256 of their bytes too, not only path, size "
                        "and modification time (reads every file on every run)")  # fmt: skip
    # The analysis: the options of `ferlab predict` that change results.
    parser.add_argument("--model", metavar="MODEL", help="model file, or 'shipped' (the default)")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                        help="face detector; 'none' treats each image as one face crop")  # fmt: skip
    parser.add_argument("--min-face", type=int, metavar="PIXELS",
                        help="smallest face side searched (default: the detector's)")  # fmt: skip
    parser.add_argument("--min-score", type=float, metavar="S",
                        help="smallest detector score kept (default: the detector's)")  # fmt: skip
    parser.add_argument("--tta", choices=("none", "flip"),
                        help="test-time augmentation (default: flip for ONNX and CNN models)")  # fmt: skip
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help="a face under top probability P is 'uncertain'")  # fmt: skip
    parser.add_argument("--every", type=int, default=25, metavar="N",
                        help="video: analyse every N-th frame")  # fmt: skip
    parser.add_argument("--smooth", type=float, default=SMOOTHING_HALF_LIFE, metavar="SECONDS",
                        help="video: half-life of each face track's smoothing (0: off)")  # fmt: skip
    parser.add_argument("--no-timelines", action="store_true",
                        help="video: no emotion timeline PNG per video in --out/timelines")  # fmt: skip
    # Where the work runs, as for `ferlab search`.
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="worker processes here, each loading the model once (0: this "
                        "process); with --scheduler or --cluster, unused")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, metavar="T",
                        help="threads of the model and detector in each process")  # fmt: skip
    parser.add_argument("--dask", action="store_true",
                        help="run the --workers N processes as a local Dask cluster")  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use a running Dask cluster")
    where.add_argument("--cluster", choices=("htcondor", "slurm", "pbs"),
                       help="start workers as batch jobs through dask-jobqueue")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="batch jobs (with --cluster)")
    parser.add_argument("--cores", type=int, default=1,
                        help="cores per job = worker processes per job (with --cluster)")  # fmt: skip
    parser.add_argument("--memory", default="4GB", help="memory per job (with --cluster)")
    parser.add_argument("--walltime", metavar="HH:MM:SS",
                        help="time limit per job (with --cluster slurm|pbs)")  # fmt: skip
    # How the driver works (none changes the results).
    parser.add_argument("--batch", type=int, default=16, metavar="N", help="photos per task")
    parser.add_argument("--segment", type=float, default=60.0, metavar="SECONDS",
                        help="video: split videos into ranges this long, analysed in parallel")  # fmt: skip
    parser.add_argument("--chunk-seconds", type=float, default=30.0, metavar="S",
                        help="write a result chunk at least this often (what a kill can lose)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=3, metavar="N",
                        help="send a task whose worker was lost again up to N times")  # fmt: skip
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                        help="seconds between progress lines when stderr is not a terminal")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress line or summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.collection.pools import open_pool
    from ferlab.collection.runner import Options, analyse_collection, count_in_background
    from ferlab.collection.store import read_manifest
    from ferlab.collection.walk import count_inputs, iter_inputs
    from ferlab.collection.work import Settings, recognizer
    from ferlab.errors import FerlabError

    if not args.inputs and not args.list:
        raise FerlabError("give folders, files or patterns to analyse, or --list FILE")
    settings = Settings(model=args.model, detector=args.detector, min_face=args.min_face,
                        min_score=args.min_score, tta=args.tta,
                        min_confidence=args.min_confidence, every=args.every,
                        smooth=args.smooth, threads=args.threads)  # fmt: skip
    options = Options(fmt=args.format, hash=args.hash, batch=args.batch,
                      segment_seconds=args.segment, chunk_seconds=args.chunk_seconds,
                      retries=args.retries, timelines=not args.no_timelines,
                      progress=not args.quiet, progress_every=args.progress_every)  # fmt: skip
    options.check()
    if args.every < 1:
        raise FerlabError(f"--every must be >= 1, got {args.every}")
    class_names = recognizer(settings).class_names  # checks the model and detector first
    resume = read_manifest(args.out) is not None
    created = not Path(args.out).expanduser().exists()
    total = None
    if not args.quiet and args.list != "-":
        total = count_in_background(lambda: count_inputs(args.inputs, list_file=args.list))
    with (
        output_folder(args.out, force=args.force, resume=resume) as out,
        open_pool(settings, workers=args.workers, dask=args.dask, scheduler=args.scheduler,
                  cluster=args.cluster, jobs=args.jobs, cores=args.cores, memory=args.memory,
                  walltime=args.walltime) as pool,
    ):  # fmt: skip
        summary = analyse_collection(
            iter_inputs(args.inputs, list_file=args.list),
            out,
            settings,
            pool,
            class_names=class_names,
            options=options,
            total=total,
        )
    read = summary.analysed - summary.skipped["unreadable"]  # unreadable inputs get a row too
    if read + summary.already_done + summary.left == 0:
        # Nothing could be read: say why in one line, and leave no output folder of our own.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        reasons = "; ".join(
            f"{reason} ({', '.join(summary.examples.get(reason, []))})"
            for reason, _ in summary.skipped.most_common(2)
        )
        raise FerlabError(f"nothing could be analysed: {reasons or 'no inputs found'}")
    if not args.quiet:
        print(summary.text())
        print(f"results in {out}/chunks (read them with ferlab.collection.store.read_rows or "
              "pyarrow.dataset)", file=sys.stderr)  # fmt: skip
    return 0
