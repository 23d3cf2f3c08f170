import { packageConfig } from '../../tsup.base';
// Two entries: everything, and the metrics alone (no tfjs, no @peftjs/core) for light consumers.
export default packageConfig({ entry: ['src/index.ts', 'src/metrics.ts'] });
