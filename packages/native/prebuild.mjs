// Where @peftjs/native's addon lives for a platform. Shared by the loader (src/index.ts), the build
// (build.mjs) and the install script (install.mjs), so the three cannot disagree.
import { join } from 'node:path';

/** The addon's file name, in every folder below. */
export const ADDON_FILE = 'peftjs_native.node';

/** The C library of this Linux (glibc or musl); undefined elsewhere. */
export function libc() {
  if (process.platform !== 'linux') return undefined;
  const header = typeof process.report?.getReport === 'function' ? process.report.getReport().header : undefined;
  return header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/** This machine's prebuild folder name: `<platform>-<arch>`, plus `-<libc>` on Linux (linux-x64-glibc). */
export function prebuildTag() {
  const c = libc();
  return `${process.platform}-${process.arch}${c ? `-${c}` : ''}`;
}

/** The prebuilt addon for this machine inside the package at `root`. */
export function prebuildPath(root) {
  return join(root, 'prebuilds', prebuildTag(), ADDON_FILE);
}

/** The addon the install script builds from source when no prebuild fits (npm rebuild @peftjs/native). */
export function sourceBuildPath(root) {
  return join(root, 'build', ADDON_FILE);
}
