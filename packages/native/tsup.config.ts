import { packageConfig } from '../../tsup.base';
// build.mjs compiles the addon into prebuilds/<platform>/ after tsup (see package.json's build).
export default packageConfig({ platform: 'node', shims: true });
