// Bundles the task entry into dist/cli.js: one file of our own code, so a task starts with one
// module load instead of a TypeScript loader (tsx costs about half a second a run). npm
// dependencies stay external; they are loaded lazily, where they are needed.
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';

const pkg = JSON.parse(await readFile(new URL('./package.json', import.meta.url), 'utf8'));
const external = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies }).filter((d) => !d.startsWith('@dbkit/'));

await build({
  entryPoints: ['tasks/cli.ts'],
  outfile: 'dist/cli.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external,
  logLevel: 'warning',
  sourcemap: 'linked',
});
