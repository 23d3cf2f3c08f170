import { packageConfig } from '../../tsup.base';
// browser.ts: @peftjs/core/browser (the tfjs backends imported statically, for bundles)
// testing/index.ts: @peftjs/core/testing, which imports `@peftjs/core` by name (kept external: one copy of
// core's registry and classes); its types resolve to core's own sources, so a fresh clone (no dist/ yet) builds
export default packageConfig({
  entry: ['src/index.ts', 'src/browser.ts', 'src/testing/index.ts'],
  external: ['@peftjs/core'],
  dts: { compilerOptions: { paths: { '@peftjs/core': ['./src/index.ts'] } } },
});
