#!/usr/bin/env bash
# `make demo`: generate the default scene bag if missing, replay it in baseline and blocks+swap modes,
# print a comparison table and, as the last line, the path of the report's JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f multidnn_sched/evaluation/replay.py ]; then
  echo "make demo: the replay evaluation (ROS nodes + multidnn-replay) is not implemented yet." >&2
  exit 2
fi
PY=.venv/bin
BAG=data/default_scene
[ -e "$BAG" ] || "$PY"/multidnn-scenes --seed 7 --frames 300 --out "$BAG"
"$PY"/multidnn-replay "$BAG" --mode baseline,blocks+swap --report runs/demo
