#!/usr/bin/env bash
# Create or update the standalone environment in .venv (what `make setup` runs).
#
#   * idempotent: when nothing it depends on changed and the venv imports cleanly, it is a no-op (a few s);
#   * self-healing: a half-deleted or broken .venv is detected by an import check and rebuilt;
#   * pinned: every package version comes from requirements/lock.txt (passed to pip as constraints).
#
# Environment: VENV (default .venv), PYTHON (default python3, must be 3.11 for the local torch wheels).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.multidnn-setup-stamp
MSG_SRC=$ROOT/tools/vision_msgs_compat
BUILD_DIR=$ROOT/build/vision_msgs_compat

log() { printf '[setup] %s\n' "$*"; }

# Everything the environment depends on; any change re-runs the (incremental) install.
inputs_hash() {
  cat requirements/standalone.in requirements/lock.txt setup.py setup.cfg package.xml scripts/setup_env.sh \
      scripts/ament_share.py "$MSG_SRC"/CMakeLists.txt "$MSG_SRC"/package.xml "$MSG_SRC"/msg/*.msg | sha256sum | cut -d' ' -f1
}

IMPORT_CHECK='import rclpy, torch, torchvision, tensorly, rosbags, multidnn_sched
from vision_msgs.msg import Detection2DArray, Classification'

venv_healthy() {
  # From / so that the checkout itself (cwd) cannot stand in for a missing editable install.
  [ -x "$VENV/bin/python" ] && (cd / && "$VENV/bin/python" -c "$IMPORT_CHECK") >/dev/null 2>&1
}

want=$(inputs_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && venv_healthy; then
  log "environment up to date ($VENV)"
  exit 0
fi
rm -f "$STAMP"

# 1. The interpreter: recreate the venv when its python is missing or cannot even start.
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }; then
  log "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=24' setuptools wheel

# 2. Pinned packages. pip skips what is already installed at the pinned version, so re-runs are cheap;
#    --force-reinstall is not used, but a package whose files were deleted is repaired by the check below.
log "installing pinned packages (first run: a few minutes, torch is ~5 GB)"
"$PY" -m pip install --disable-pip-version-check --progress-bar off \
  -c requirements/lock.txt -r requirements/standalone.in | grep -vE '^Requirement already satisfied' || true
if ! "$PY" -c 'import rclpy, torch, torchvision, tensorly, rosbags' >/dev/null 2>&1; then
  log "import check failed after install: reinstalling pinned packages"
  "$PY" -m pip install --disable-pip-version-check --progress-bar off --force-reinstall --no-deps \
    -c requirements/lock.txt -r requirements/standalone.in >/dev/null
fi

# 3. vision_msgs: use an installed one (a robot's), else build our field-compatible package into the venv.
if ! "$PY" -c 'from vision_msgs.msg import Detection2DArray, Classification' >/dev/null 2>&1; then
  log "building vision_msgs-compatible messages into the venv"
  PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NP_INC=$("$PY" -c 'import numpy; print(numpy.get_include())')
  # The ros-* wheels' exported CMake files hard-code the wheel builder's include paths: point them here.
  grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INC#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INC#g" "$f"
  done
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  (
    export PATH="$VENV/bin:$PATH" CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
    cmake -S "$MSG_SRC" -B "$BUILD_DIR" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$BUILD_DIR/configure.log" 2>&1 \
      || { tail -30 "$BUILD_DIR/configure.log"; exit 1; }
    cmake --build "$BUILD_DIR" -j "$(nproc)" >"$BUILD_DIR/build.log" 2>&1 \
      || { tail -30 "$BUILD_DIR/build.log"; exit 1; }
    cmake --install "$BUILD_DIR" >"$BUILD_DIR/install.log" 2>&1 || { tail -30 "$BUILD_DIR/install.log"; exit 1; }
  )
  # rosidl installs the Python package under lib/python3.11/site-packages of the prefix: the venv's own.
fi

# 4. This package, editable, so console scripts land on the venv's PATH.
log "installing multidnn_sched (editable)"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
  | grep -vE 'BuildBackendWarning|^\s*(!!|\*+|warnings.warn|with strategy|Please be careful|name as your|$)' || true

# 5. What colcon installs under share/ and lib/multidnn_sched/ (the editable install has none), so that the real
#    `ros2 launch multidnn_sched ...` / `ros2 run` (../shared/ros2-tools) find the package in this venv too.
"$PY" scripts/ament_share.py "$VENV" >/dev/null

if ! venv_healthy; then
  log "environment check failed:"
  (cd / && "$VENV/bin/python" -c "$IMPORT_CHECK")
  exit 1
fi
inputs_hash >"$STAMP"
log "environment ready: $VENV"
