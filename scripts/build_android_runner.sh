#!/usr/bin/env bash
# Cross-build ExecuTorch's executor_runner (with the XNNPACK delegate) for arm64 Android phones, so that
# `edgevit bench --device android` can push and run it. Needs the Android NDK, CMake and an ExecuTorch
# source tree matching the pinned executorch (cloned here with git unless EXECUTORCH_SRC points at one).
set -euo pipefail

ET_VERSION="${ET_VERSION:-v1.5.1}"
OUT_DIR="${OUT_DIR:-build/android}"
ABI="${ANDROID_ABI:-arm64-v8a}"
PLATFORM="${ANDROID_PLATFORM:-android-26}"
NDK="${ANDROID_NDK:-${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}}"

missing=()
if [[ -z "$NDK" ]]; then
  missing+=("the Android NDK: install it (Android Studio > SDK Manager > NDK, or sdkmanager 'ndk;27.2.12479018') and set ANDROID_NDK to its folder")
elif [[ ! -f "$NDK/build/cmake/android.toolchain.cmake" ]]; then
  missing+=("a usable NDK: $NDK has no build/cmake/android.toolchain.cmake; point ANDROID_NDK at the NDK's root")
fi
command -v cmake >/dev/null || missing+=("cmake >= 3.24 (Debian: apt install cmake)")
if [[ -z "${EXECUTORCH_SRC:-}" ]]; then
  command -v git >/dev/null || missing+=("git, to clone ExecuTorch $ET_VERSION (or set EXECUTORCH_SRC to a checkout)")
fi
if (( ${#missing[@]} )); then
  echo "make android-runner cannot build executor_runner here; missing:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  exit 1
fi

SRC="${EXECUTORCH_SRC:-$OUT_DIR/executorch-src}"
if [[ ! -d "$SRC/.git" && -z "${EXECUTORCH_SRC:-}" ]]; then
  echo "cloning ExecuTorch $ET_VERSION into $SRC"
  git clone --depth 1 --branch "$ET_VERSION" --recurse-submodules --shallow-submodules \
    https://github.com/pytorch/executorch.git "$SRC"
fi

BUILD="$OUT_DIR/executorch-$ABI"
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
cmake -S "$SRC" -B "$BUILD" "${GENERATOR[@]}" \
  -DCMAKE_TOOLCHAIN_FILE="$NDK/build/cmake/android.toolchain.cmake" \
  -DANDROID_ABI="$ABI" \
  -DANDROID_PLATFORM="$PLATFORM" \
  -DCMAKE_BUILD_TYPE=Release \
  -DEXECUTORCH_ENABLE_LOGGING=ON \
  -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON \
  -DEXECUTORCH_BUILD_XNNPACK=ON \
  -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON \
  -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
  -DEXECUTORCH_BUILD_EXTENSION_MODULE=ON \
  -DEXECUTORCH_BUILD_EXTENSION_TENSOR=ON \
  -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON
cmake --build "$BUILD" --target executor_runner -j "$(nproc 2>/dev/null || echo 4)"
cp "$BUILD/executor_runner" "$OUT_DIR/executor_runner"
echo "built $OUT_DIR/executor_runner ($ABI); the 'android' device profile points at it"
