import { packageConfig } from '../../tsup.base';
// tsup cleans dist/ first; build.mjs compiles dist/peftjs_native.node after it (see package.json's build).
export default packageConfig({ platform: 'node', shims: true });
