#!/usr/bin/env bash
# `make demo`: generate the default scene bag if missing, replay it in baseline and blocks+swap modes at 15 Hz,
# print a comparison table and, as the LAST line, the path of the report's JSON.
#   BAG=...        bag to replay (default data/default_scene, generated with seed 7, 300 frames, 15 Hz, hard
#                  scene profile; an existing bag is reused as it is)
#   REPORT=...     report directory (default runs/demo)
#   VARIANTS=...   compression_tools manifest for blocks+swap (default runs/variants/manifest.json; built with
#                  `multidnn-compress build-defaults` when missing, unless BUILD_VARIANTS=0)
#   REPLAY_ARGS=.. extra multidnn-replay options (e.g. "--loop 3")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
BAG=${BAG:-data/default_scene}
REPORT=${REPORT:-runs/demo}
VARIANTS=${VARIANTS:-runs/variants/manifest.json}
if [ ! -e "$BAG" ]; then
  echo "make demo: generating the default scene bag in $BAG" >&2
  "$BIN"/multidnn-scenes --seed 7 --frames 300 --rate 15 --profile hard --out "$BAG" --no-progress >&2
fi
if [ ! -f "$VARIANTS" ] && [ "${BUILD_VARIANTS:-1}" != 0 ]; then
  echo "make demo: building block variants into $(dirname "$VARIANTS")" >&2
  "$BIN"/multidnn-compress build-defaults --out "$(dirname "$VARIANTS")" --quiet >&2
fi
extra=()
if [ -f "$VARIANTS" ]; then
  extra+=(--variants "$VARIANTS")
else
  echo "make demo: no variant manifest at $VARIANTS; blocks+swap can serialize but has nothing to swap" >&2
fi
# shellcheck disable=SC2086
"$BIN"/multidnn-replay "$BAG" --mode baseline,blocks+swap --rate 15 --report "$REPORT" "${extra[@]}" ${REPLAY_ARGS:-}
