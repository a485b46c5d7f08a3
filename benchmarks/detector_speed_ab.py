"""BlazeFace's detection time beside an earlier commit's, side by side on the same machine.

The speed record (``recognizer_speed.py``) is only comparable between runs on equally quiet
machines; this times the working tree's ``ferlab.vision.blazeface`` and the one of ``--ref`` (read
with ``git show``) in one process, rounds interleaved, on the pipeline benchmark's seven
background photos at ``--size``, so their ratio holds on a shared machine too.

    python benchmarks/detector_speed_ab.py --ref c8d6586 [--size 1280x720] [--repeats 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import RESULTS, ROOT, side_by_side, write_record

RESULT = RESULTS / "detector_speed_ab.json"


def module_at(ref: str):
    """``ferlab.vision.blazeface`` as it was at git ``ref``, loaded as its own module."""
    source = subprocess.run(
        ["git", "show", f"{ref}:src/ferlab/vision/blazeface.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "blazeface_at_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("blazeface_at_ref", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the earlier commit")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    import cv2
    from PIL import Image

    from ferlab.vision import blazeface
    from ferlab.vision.scenes import background_photos

    cv2.setNumThreads(1)
    width, height = (int(v) for v in args.size.split("x"))
    photos = [
        np.asarray(Image.fromarray(p).resize((width, height), Image.Resampling.BILINEAR))
        for p in background_photos()
    ]
    earlier, now = module_at(args.ref).BlazeFaceDetector(), blazeface.BlazeFaceDetector()
    timing = side_by_side(
        {
            args.ref: lambda: [earlier.detect(p) for p in photos],
            "working tree": lambda: [now.detect(p) for p in photos],
        },
        args.repeats,
    )
    record = {
        "what": "BlazeFace detection time of the working tree beside an earlier commit's",
        "ref": args.ref,
        "detectors": {args.ref: earlier.version, "working tree": now.version},
        "photos": len(photos),
        "size": args.size,
        **timing.record(),
    }
    write_record(args.out, record)
    print("\n".join(timing.lines()))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
