# Sourced by the release run scripts (cnn_gpu_run.sh, cnn_cpu_recipe.sh) from the repository
# root: PYTHON (default .venv/bin/python if present, else python3), DATA (FER2013 tar.gz or
# folder; default shared/data/ or /work/shared/data/), and ferlab(), the CLI of this checkout.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ -z "${DATA:-}" ]]; then
  for candidate in shared/data/fer2013-images.tar.gz /work/shared/data/fer2013-images.tar.gz; do
    if [[ -e "$candidate" ]]; then DATA=$candidate; break; fi
  done
fi
[[ -n "${DATA:-}" && -e "$DATA" ]] || { echo "$(basename "$0"): set DATA to FER2013" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
ferlab() { "$PYTHON" -c 'import sys; from ferlab.cli import main; sys.exit(main())' "$@"; }
