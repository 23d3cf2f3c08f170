import { packageConfig } from '../../tsup.base';
// browser.ts: peftjs/browser (re-exports @peftjs/core/browser, kept external)
export default packageConfig({ entry: ['src/index.ts', 'src/browser.ts'] });
