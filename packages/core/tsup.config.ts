import { packageConfig } from '../../tsup.base';
// browser.ts: @peftjs/core/browser (the tfjs backends imported statically, for bundles)
export default packageConfig({ entry: ['src/index.ts', 'src/browser.ts'] });
