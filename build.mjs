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

// The compose `api` service's program with its one dependency (pg) in one file, so its image builds
// with no network and no npm install (packages/api/Dockerfile). pg-native is pg's optional native
// binding, which the example does not use.
await build({
  entryPoints: ['packages/api/server.mjs'],
  outfile: 'packages/api/dist/server.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['pg-native'],
  // pg is CommonJS: its require() of node's own modules needs a require in an ES module.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: 'warning',
});
