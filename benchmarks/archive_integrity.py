"""Damaged archives are refused or read exactly (issue 45), and what verification costs.

Repeats the issue's measurement: a small FER2013 archive built from real FER2013 images
(extracted from ``/work/shared/data/fer2013-images.tar.gz`` into a scratch folder, never into
the project), one bit flipped at each of 25 seeded random places, each damaged copy loaded with
:func:`ferlab.data.load_fer2013`. Every outcome is one of

- ``refused``: a one-line FerlabError naming the file,
- ``exact``: the same names, labels, splits and pixels as the intact archive,
- ``different_warned`` / ``different_silent``: other data, with or without a warning,
- ``other_error``: any other exception (a traceback for a user).

The same is done for a zip of the same files. Then the load-time cost of verification, side by
side: the SHA-256 of the real 55 MB archive against its full load (done once, when the cache is
built), and the cache file's own SHA-256 check against a cached load (done on every load); the
four are timed in ``--repeats`` interleaved rounds and their medians compared.

    .venv/bin/python benchmarks/archive_integrity.py            # writes results/archive_integrity.json
    # the same on the code before this change, side by side:
    git archive 83f66d2 src | tar -x -C /tmp/ferlab-head
    PYTHONPATH=/tmp/ferlab-head/src .venv/bin/python benchmarks/archive_integrity.py \\
        --label before --out /tmp/archive_integrity_before.json
    .venv/bin/python benchmarks/archive_integrity.py --baseline /tmp/archive_integrity_before.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ferlab.data import load_fer2013
from ferlab.errors import FerlabError
from harness import RESULTS as RECORDS
from harness import command_line, side_by_side, write_record

DATA = Path("/work/shared/data/fer2013-images.tar.gz")
SCRATCH = Path(tempfile.gettempdir()) / "ferlab-archive-integrity"
RESULTS = RECORDS / "archive_integrity.json"
PER_CLASS = {"train": 3, "test": 2}  # images of each class and split folder: 35 in all


def real_images(source: Path = DATA) -> dict[str, bytes]:
    """The first few JPEG files of each split and class folder of the real archive, by name."""
    chosen: dict[str, bytes] = {}
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(source, "r|gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if counts.get(key, 0) >= PER_CLASS.get(parts[1], 0):
                continue
            counts[key] = counts.get(key, 0) + 1
            chosen[member.name] = archive.extractfile(member).read()
    return dict(sorted(chosen.items()))


def write_tar_gz(files: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(payload))
    return path


def write_zip(files: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2023, 11, 14, 22, 13, 20)), payload)
    return path


def snapshot(data) -> tuple:
    order = np.argsort(data.names)
    return (
        data.names[order].tolist(),
        data.labels[order].tolist(),
        data.splits[order].tolist(),
        data.images[order],
    )


def same(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and np.array_equal(a[3], b[3])


def outcome(path: Path, reference: tuple) -> tuple[str, str]:
    """How loading ``path`` ends: refused, exact, different_warned, different_silent or other_error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load_fer2013(path, use_cache=False)
        except FerlabError as exc:
            text = str(exc)
            one_line = "\n" not in text.strip() and str(path) in text
            return ("refused" if one_line else "other_error"), text
        except Exception as exc:  # noqa: BLE001 - counted, not hidden
            return "other_error", f"{exc.__class__.__name__}: {exc}"
    if same(snapshot(data), reference):
        return "exact", ""
    kind = "different_warned" if caught else "different_silent"
    return kind, "; ".join(str(w.message) for w in caught)[:300]


def flip_run(archive: Path, flips: int, seed: int, work: Path) -> dict:
    intact = archive.read_bytes()
    try:
        reference = snapshot(load_fer2013(archive, use_cache=False))
    except FerlabError as exc:  # e.g. a version that reads no zip
        return {"archive_bytes": len(intact), "intact_archive_refused": str(exc)}
    rng = np.random.default_rng(seed)
    positions = sorted(int(p) for p in rng.choice(len(intact) * 8, size=flips, replace=False))
    counts = dict.fromkeys(
        ["refused", "exact", "different_warned", "different_silent", "other_error"], 0
    )
    cases = []
    for bit in positions:
        damaged = bytearray(intact)
        damaged[bit // 8] ^= 1 << (bit % 8)
        target = work / f"damaged-{archive.name}"
        target.write_bytes(bytes(damaged))
        kind, detail = outcome(target, reference)
        counts[kind] += 1
        cases.append({"byte": bit // 8, "bit": bit % 8, "outcome": kind, "detail": detail[:200]})
    return {
        "archive_bytes": len(intact),
        "images": len(reference[0]),
        "flips": flips,
        "seed": seed,
        "counts": counts,
        "cases": cases,
    }


def verification_cost(repeats: int) -> dict:
    """SHA256SUMS check against a full load of the real archive; cache digest against a hit.

    Under a ferlab without these checks (``--label before`` on an older checkout) only the load
    times are measured, for the side-by-side ratio.
    """
    from ferlab.common.arrays import read_npz
    from ferlab.data.cache import cache_path

    try:
        from ferlab.data.integrity import arrays_digest, file_sha256, verify_sha256
    except ImportError:
        arrays_digest = file_sha256 = verify_sha256 = None
    os.environ["FERLAB_CACHE_DIR"] = str(SCRATCH / "cache")
    shutil.rmtree(SCRATCH / "cache", ignore_errors=True)
    start = time.perf_counter()
    data = load_fer2013(DATA)  # cache miss: (verifies the SHA-256,) decodes, writes the cache
    miss = time.perf_counter() - start
    (target,) = (SCRATCH / "cache").glob("fer2013-class_folders-*.npz")
    timed = {
        "full_load_uncached": lambda: load_fer2013(DATA, use_cache=False),
        "cached_load": lambda: load_fer2013(DATA),  # reads the cache (and checks its digest)
    }
    if verify_sha256 is not None:
        assert target == cache_path("fer2013-class_folders", DATA, {"strict": False})
        assert verify_sha256(DATA) is not None, "SHA256SUMS beside the data lists the archive"
        meta, arrays = read_npz(target, expected_format="ferlab-data-cache")
        meta.pop("sha256")
        timed["sha256sums_check"] = lambda: file_sha256(DATA)
        timed["cache_digest_check"] = lambda: arrays_digest(meta, arrays)
    timing = side_by_side(timed, repeats, warmup=0)  # the cache miss above warmed them up
    uncached, hit = timing.medians["full_load_uncached"], timing.medians["cached_load"]
    result = {
        "archive": str(DATA),
        "archive_bytes": DATA.stat().st_size,
        "images": len(data),
        "cache_bytes": target.stat().st_size,
        "full_load_uncached_s": round(uncached, 3),
        "first_load_building_cache_s": round(miss, 3),
        "cached_load_s": round(hit, 4),
        "repeats": repeats,
        "side_by_side": timing.record(),
    }
    if verify_sha256 is None:
        return result
    sha, digest = timing.medians["sha256sums_check"], timing.medians["cache_digest_check"]
    result.update(
        {
            "sha256sums_check_s": round(sha, 4),
            "sha256sums_check_over_full_load": round(sha / uncached, 4),
            "cache_digest_check_s": round(digest, 4),
            "cache_digest_over_cached_load": round(digest / hit, 4),
            "note": "SHA256SUMS is checked when the cache is built and on every uncached load "
            "(a cached load does not hash the archive); the cache file's digest is checked on "
            "every cached load",
        }
    )
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=25)
    parser.add_argument("--seed", type=int, default=45)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="after")
    parser.add_argument("--flips-only", action="store_true", help="skip the timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=Path, help="a --label before run's JSON, kept beside")
    args = parser.parse_args(argv)
    work = SCRATCH / "flips"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = real_images()
    result = {
        "label": args.label,
        "command": command_line(None if argv is None else [__file__, *argv]),
        "python": platform.python_version(),
        "source": f"{len(files)} real JPEG files of {DATA.name}, fer2013/<split>/<class>/<name>",
        "tar_gz": flip_run(
            write_tar_gz(files, work / "fer2013-small.tar.gz"), args.flips, args.seed, work
        ),
        "zip": flip_run(write_zip(files, work / "fer2013-small.zip"), args.flips, args.seed, work),
    }
    if not args.flips_only:
        result["verification_cost"] = verification_cost(args.repeats)
    if args.baseline:
        before = json.loads(args.baseline.read_text())
        result["before"] = {
            "label": before["label"],
            "command": before["command"],
            "tar_gz": before["tar_gz"].get("counts", before["tar_gz"]),
            "zip": before["zip"].get("counts", before["zip"]),
            "verification_cost": before.get("verification_cost"),
        }
        if "verification_cost" in before and "verification_cost" in result:
            now, then = result["verification_cost"], before["verification_cost"]
            result["load_time_after_over_before"] = {
                key: round(now[key] / then[key], 3)
                for key in ("full_load_uncached_s", "first_load_building_cache_s", "cached_load_s")
            }
    write_record(args.out, result)
    summary = {k: result[k].get("counts", result[k]) for k in ("tar_gz", "zip")}
    print(json.dumps({"label": args.label, **summary}, indent=1))
    if "verification_cost" in result:
        print(json.dumps(result["verification_cost"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
