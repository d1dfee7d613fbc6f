#!/usr/bin/env bash
# Redo the pictures in docs/screenshots/: a short detection run and a short classification run on the
# synthetic sets, TensorBoard bound to 127.0.0.1 on a free port, headless Chromium screenshots of its
# tabs, and copies of the runs' result plots (downscaled when over 300 KB).
#   docs/screenshots/make_screenshots.sh            # train both runs (about 10-20 min on 2 CPU cores), then shoot
#   RUNS=/tmp/shots SKIP_TRAIN=1 docs/screenshots/make_screenshots.sh   # shoot the runs already in $RUNS
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
RUNS=${RUNS:-/tmp/screenshot_runs}
OUT=docs/screenshots
export PYTHONPATH=$PWD

if [ -z "${SKIP_TRAIN:-}" ]; then
  "$PY" bin/train.py experiment=facemask_detection trainer.max_epochs=3 data.image_size=320 data.crop=null \
    "paths.results_dir=$RUNS" 'logger=[tensorboard,csv]'
  "$PY" bin/train.py experiment=mask_age_gender trainer.max_epochs=4 "paths.results_dir=$RUNS" 'logger=[tensorboard,csv]'
fi
det=$(ls -d "$RUNS"/facemask_detection/*/ | sort | tail -1)
cls=$(ls -d "$RUNS"/mask_age_gender/*/ | sort | tail -1)

# The result plots: copy; over 300 KB, reduced to 256 colours, then downscaled until under.
copy() {  # copy <source png> <name>
  [ -f "$1" ] || { echo "missing $1" >&2; return 0; }
  "$PY" - "$1" "$OUT/$2" <<'PYEOF'
import shutil, sys
from pathlib import Path
from PIL import Image
source, target = Path(sys.argv[1]), Path(sys.argv[2])
if source.resolve() != target.resolve():
    shutil.copyfile(source, target)
if target.stat().st_size > 300_000:  # 256 colours first (full size), then smaller
    Image.open(target).convert("RGB").quantize(colors=256).save(target, optimize=True)
while target.stat().st_size > 300_000:
    image = Image.open(target).convert("RGB")
    image.thumbnail((int(image.width * 0.85), int(image.height * 0.85)))
    image.quantize(colors=256).save(target, optimize=True)
PYEOF
}
copy "$det/results/results.png" detection_results.png
copy "$det/results/test_predictions.png" detection_test_predictions.png
for f in "$det"/results/test_*.png; do
  name=$(basename "$f")
  case "$name" in test_predictions.png) ;; *) copy "$f" "detection_$name" ;; esac
done
# The per-class table (results/per_class_report.csv, also in report.md and the console) drawn as a picture.
"$PY" - "$det/results/per_class_report.csv" "$OUT/detection_per_class_table.png" <<'PYEOF'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.reader(open(sys.argv[1])))
fig, ax = plt.subplots(figsize=(1.3 * len(rows[0]), 0.4 * len(rows) + 0.3))
ax.axis("off")
cells = [[(f"{float(v):.3f}" if v.replace(".", "", 1).isdigit() and "." in v else v) for v in row] for row in rows[1:]]
table = ax.table(cellText=cells, colLabels=rows[0], loc="center")
table.auto_set_font_size(False)
table.set_fontsize(9)
table.scale(1, 1.4)
table.auto_set_column_width(col=list(range(len(rows[0]))))
fig.savefig(sys.argv[2], dpi=100, bbox_inches="tight")
PYEOF
copy "$cls/results/results.png" classification_results.png
copy "$cls/results/test_predictions.png" classification_test_predictions.png
copy "$cls/results/test_pr_roc_curves.png" classification_test_pr_roc_curves.png

# TensorBoard on a free local port, one instance per run; each tab shot with a headless browser.
shoot() {  # shoot <logdir> <prefix> <tab>...
  local logdir=$1 prefix=$2; shift 2
  local port
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$PY" -m tensorboard.main --logdir "$logdir" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
  local tb=$!
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 1; done
  for tab in "$@"; do
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
      --virtual-time-budget=15000 --screenshot="$OUT/${prefix}_${tab}.png" "http://127.0.0.1:$port/#$tab" 2>/dev/null
  done
  # Time Series once more, 3000 px tall: the order of the groups (train, val, z_test) below the first screen.
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,3000 \
    --virtual-time-budget=15000 --screenshot="$OUT/${prefix}_timeseries_tall.png" "http://127.0.0.1:$port/#timeseries" 2>/dev/null
  kill "$tb"
}
shoot "$det" tensorboard_detection timeseries scalars images hparams
shoot "$cls" tensorboard_classification timeseries custom_scalars pr_curves hparams
for f in "$OUT"/tensorboard_*.png; do copy "$f" "$(basename "$f")"; done
ls -la "$OUT"
