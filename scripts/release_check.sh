#!/usr/bin/env bash
# make release-check: build ferlab's wheel and sdist, check them, install the wheel into a fresh
# virtual environment without the development extras, and smoke-test it there as a user would.
#
#   scripts/release_check.sh            (the dev venv's Python builds; PYTHON=... to choose)
#   KEEP=1 scripts/release_check.sh     (keep the work folder under /tmp to look at)
#
# Steps: python -m build from a clean copy of the working tree's files (the sdist, then the wheel
# built from that sdist, so a file missing from the sdist fails too); twine check --strict; the
# wheel has every file git tracks under src/ferlab and the named ones, the sdist its license files,
# and the wheel is under WHEEL_MAX_KIB (5 MiB unless set); then in a
# fresh venv with the base install only (pip install -c constraints.txt WHEEL): ferlab --version,
# ferlab predict on a real photo (scikit-image's astronaut.png, one face, happy, read from the
# dev venv: the base install has no scikit-image), EmotionRecognizer from Python, a lab command
# refused in one line naming ferlab[lab], ferlab serve answering /healthz, /v1/model and one
# photo; then the same venv gets the lab extra (WHEEL[lab]) and trains the shipped config
# digits_fc by name for one epoch. Needs the network only for PyPI. Prints sizes and times.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=$(mktemp -d /tmp/ferlab-release.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else echo "release-check: kept $WORK"; fi
}
trap cleanup EXIT
step() { echo "== release-check: $*"; }
fail() { echo "release-check: FAILED: $*" >&2; exit 1; }
START=$SECONDS
# The wheel is meant to stay small (the model and the detector are a few MB); over this it fails.
WHEEL_MAX_KIB=${WHEEL_MAX_KIB:-5120}

step "build the sdist and the wheel"
# From a copy of the files git would commit (tracked, and untracked ones it does not ignore), so a
# stale src/ferlab.egg-info or build/ of the working tree cannot add files to the package (setuptools
# reads the old SOURCES.txt back), and nothing is written into the working tree.
if git rev-parse --git-dir >/dev/null 2>&1; then
  mkdir "$WORK/src"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f ]] && printf '%s\0' "$f"; done | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
  SRC=$WORK/src
else
  SRC=.
fi
"$PY" -m build --outdir "$WORK/dist" "$SRC" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "python -m build"; }
WHEEL=$(ls "$WORK"/dist/ferlab-*.whl)
SDIST=$(ls "$WORK"/dist/ferlab-*.tar.gz)
VERSION=$("$PY" -c 'import sys, pathlib; print(pathlib.Path(sys.argv[1]).name.split("-")[1])' "$WHEEL")
step "twine check"
"$PY" -m twine check --strict "$WORK"/dist/* || fail "twine check"

step "required files in the wheel and the sdist; the wheel's size"
# Every file git tracks under src/ferlab must be in the wheel (a .py file or package data left out of
# pyproject.toml's package-data fails here), and the named ones besides; a file the wheel has that
# git does not track (a local build from a working tree) is only listed.
TRACKED=$WORK/tracked.txt
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$REPO" ls-files src/ferlab >"$TRACKED"
else
  : >"$TRACKED"; echo "release-check: not a git checkout: only the named files are required"
fi
"$PY" - "$WHEEL" "$SDIST" "$VERSION" "$TRACKED" "$WHEEL_MAX_KIB" <<'EOF' || fail "the wheel or sdist (above)"
import os, sys, tarfile, zipfile
wheel, sdist, version, tracked, max_kib = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
info = f"ferlab-{version}.dist-info"
need = [f"{info}/licenses/LICENSE", f"{info}/licenses/THIRD_PARTY_NOTICES.md",
        "ferlab/assets/fer2013_cnn.onnx", "ferlab/assets/model_card.json",
        "ferlab/assets/MODEL_CARD.md", "ferlab/assets/blazeface_back.onnx",
        "ferlab/assets/blazeface_full_range.onnx",
        "ferlab/assets/LICENSE-BlazeFace-Apache-2.0.txt",
        "ferlab/configs/digits_fc.toml", "ferlab/configs/spaces/digits_demo.toml",
        "ferlab/serve/static/index.html", "ferlab/serve/static/app.js",
        "ferlab/serve/static/style.css", "ferlab/py.typed"]
git_files = {line.strip().removeprefix("src/") for line in open(tracked) if line.strip()}
need += sorted(git_files - set(need))
missing = [n for n in need if n not in names]
untracked = sorted(n for n in names if n.startswith("ferlab/") and git_files and n not in git_files)
if untracked:
    print(f"note: in the wheel but not committed in git: {', '.join(untracked)}")
top = f"ferlab-{version}/"
sdist_names = set(tarfile.open(sdist).getnames())
missing += [f"sdist:{n}" for n in ("LICENSE", "THIRD_PARTY_NOTICES.md", "pyproject.toml")
            if top + n not in sdist_names]
problems = [f"missing: {', '.join(missing)}"] if missing else []
kib = os.path.getsize(wheel) // 1024
if kib > int(max_kib):
    problems.append(f"the wheel is {kib} KiB, over WHEEL_MAX_KIB={max_kib}: keep large files "
                    "out of the package, or raise the limit in scripts/release_check.sh on purpose")
if problems:
    sys.exit("\n".join(problems))
print(f"wheel {len(names)} files ({kib} KiB), sdist {len(sdist_names)} entries: "
      f"every required file is there ({len(need)} checked)")
EOF

step "fresh venv, base install only: pip install -c constraints.txt $(basename "$WHEEL")"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
FERLAB=$WORK/venv/bin/ferlab
"$VPY" -m pip install --quiet --upgrade pip
t0=$SECONDS
"$VPY" -m pip install --quiet -c "$REPO/constraints.txt" "$WHEEL" || fail "pip install of the wheel"
BASE_SECONDS=$((SECONDS - t0))
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
BASE_MB=$(du -sm "$SITE" | cut -f1)
PHOTO=$("$PY" -c 'import os, skimage.data as d; print(os.path.join(os.path.dirname(d.__file__), "astronaut.png"))')
[[ -f $PHOTO ]] || fail "no astronaut.png (the dev venv needs scikit-image)"
cd "$WORK"  # nothing of the source tree is importable from here

step "ferlab --version"
"$FERLAB" --version | tee version.txt
grep -q "^ferlab $VERSION$" version.txt || fail "--version does not say ferlab $VERSION"
grep -q "^model .* (sha256 [0-9a-f]\{64\})$" version.txt || fail "--version gives no model sha256"
"$FERLAB" --help >/dev/null || fail "ferlab --help"

step "ferlab predict on a real photo"
"$FERLAB" predict "$PHOTO" --format json >predict.json || fail "ferlab predict"
"$VPY" - predict.json <<'EOF' || fail "ferlab predict's answer"
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 1, rows
assert rows[0]["emotion"] == "happy", rows[0]
print(f"one face, {rows[0]['emotion']} {rows[0]['probability']:.2f}")
EOF

step "EmotionRecognizer from Python"
"$VPY" - "$PHOTO" <<'EOF' || fail "EmotionRecognizer"
import sys
from ferlab import EmotionRecognizer
faces = EmotionRecognizer().analyze(sys.argv[1])
assert [f.emotion for f in faces] == ["happy"], faces
print(f"EmotionRecognizer: one face, {faces[0].emotion}")
EOF

step "a lab command without the lab extra says which extra, in one line"
set +e
"$FERLAB" train digits_fc --out run-nolab >nolab.out 2>nolab.err
code=$?
set -e
cat nolab.err
[[ $code == 2 && $(wc -l <nolab.err) == 1 ]] || fail "train without the lab: exit $code, $(wc -l <nolab.err) lines"
grep -q "pip install 'ferlab\[lab\]'" nolab.err || fail "the message does not name ferlab[lab]"

step "ferlab serve: /healthz, /v1/model and one photo"
PORT=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$FERLAB" serve --host 127.0.0.1 --port "$PORT" >serve.log 2>&1 &
SERVER_PID=$!
"$VPY" - "$PORT" "$PHOTO" <<'EOF' || { cat serve.log; fail "ferlab serve"; }
import json, sys, time, urllib.request
port, photo = sys.argv[1:]
base = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        health = json.load(urllib.request.urlopen(f"{base}/healthz", timeout=2))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server did not answer /healthz within 30 s")
assert health == {"status": "ok"}, health
facts = json.load(urllib.request.urlopen(f"{base}/v1/model", timeout=10))
for key in ("ferlab", "name", "version", "sha256", "detector", "onnxruntime", "opencv"):
    assert facts.get(key), f"/v1/model lacks {key}"
request = urllib.request.Request(
    f"{base}/v1/analyze", data=open(photo, "rb").read(), headers={"Content-Type": "image/png"}
)
answer = json.load(urllib.request.urlopen(request, timeout=30))
assert [f["emotion"] for f in answer["faces"]] == ["happy"], answer
print(f"serve: healthz ok, model {facts['name']} {facts['version']}, one face, happy")
EOF
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

step "the lab extra: pip install '$(basename "$WHEEL")[lab]', then ferlab train digits_fc for one epoch"
t0=$SECONDS
"$VPY" -m pip install --quiet -c "$REPO/constraints.txt" "$WHEEL[lab]" || fail "pip install of the lab extra"
LAB_SECONDS=$((SECONDS - t0))
LAB_MB=$(du -sm "$SITE" | cut -f1)
"$FERLAB" configs | grep -q "^digits_fc " || fail "ferlab configs does not list digits_fc"
"$FERLAB" train digits_fc --set solver.epochs=1 --out run --quiet >train.out || fail "ferlab train digits_fc"
[[ -f run/model.npz ]] || fail "ferlab train wrote no run/model.npz"
grep "accuracy" train.out | tail -2

step "figures"
echo "wheel $(du -k "$WHEEL" | cut -f1) KiB ($(basename "$WHEEL")), sdist $(du -k "$SDIST" | cut -f1) KiB"
echo "base install: ${BASE_MB} MB of site-packages, ${BASE_SECONDS} s to install"
echo "with the lab extra: ${LAB_MB} MB of site-packages, ${LAB_SECONDS} s more to install"
echo "release-check passed in $((SECONDS - START)) s"
