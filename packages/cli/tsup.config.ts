import { packageConfig } from '../../tsup.base';
// The library (src/index.ts) and the `peft` executable (src/bin.ts; esbuild keeps its #! line and tsup marks it executable).
export default packageConfig({ entry: ['src/index.ts', 'src/bin.ts'], platform: 'node' });
