import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { INPUTS_LABEL } from '../images.ts';
import { swarm } from './swarm-commands.ts';

/** The stack's service Compose builds (the example api). */
export const APP_SERVICE = 'api';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Compose's model, read field by field
type Json = any;

/**
 * The image `docker stack deploy` runs for a service Compose builds (the example api): tagged with
 * the hash of what it is built from (every file of the build context, the build arguments, the base
 * image's id), so that a change to packages/api is a new tag, which updates the service, and the
 * same files are the same tag, which changes nothing. `inputs` goes on the image as a label, as the
 * stand-ins carry theirs (images.ts).
 */
export async function builtImage(
  ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>,
  model: Json,
  stack: string,
  service: string,
): Promise<{ tag: string; inputs: string; context: string; build: Json } | undefined> {
  const build = model.services?.[service]?.build;
  if (!build) return undefined;
  const context = path.resolve(path.dirname(ctx.cfg.composeFile), build.context ?? '.');
  const h = createHash('sha256');
  const files = (await ctx.fs.readdir(context, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => path.relative(context, path.join(e.parentPath ?? e.path, e.name)))
    .sort();
  for (const f of files)
    h.update(f)
      .update('\0')
      .update(await ctx.fs.readFile(path.join(context, f)))
      .update('\0');
  const args: Record<string, string> = build.args ?? {};
  h.update(JSON.stringify([build.dockerfile ?? 'Dockerfile', Object.entries(args).sort()]));
  // The base image's id: a rebuilt NODE_IMAGE under the same name is a new input too.
  for (const image of Object.values(args).filter((v) => typeof v === 'string' && v)) {
    const r = await ctx.exec('docker', ['image', 'inspect', '--format', '{{.Id}}', image], { nothrow: true });
    h.update(r.code === 0 ? r.stdout.trim() : '').update('\0');
  }
  const inputs = h.digest('hex');
  return { tag: `${stack}-${service}:${inputs.slice(0, 12)}`, inputs, context, build };
}

/**
 * Stack deploy ignores `build`: the example service's image is built here, as Compose would build
 * it, when no image records its current inputs (builtImage). Returns its tag.
 */
export async function ensureAppImage(ctx: Ctx, model: Json, stack: string, env: Record<string, string>): Promise<string | undefined> {
  const { cfg, exec, log } = ctx;
  const want = await builtImage(ctx, model, stack, APP_SERVICE);
  if (!want) return undefined;
  const have = await exec('docker', swarm.imageInputs(INPUTS_LABEL, want.tag), { cwd: cfg.root, env, nothrow: true });
  if (have.code === 0 && have.stdout.trim() === want.inputs) return want.tag;
  log.step(`building the ${APP_SERVICE} image ${want.tag}`);
  const args = Object.entries<string>(want.build.args ?? {}).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
  await exec(
    'docker',
    [
      'build',
      '--quiet',
      '--label',
      `${INPUTS_LABEL}=${want.inputs}`,
      ...args,
      '--file',
      path.resolve(want.context, want.build.dockerfile ?? 'Dockerfile'),
      '--tag',
      want.tag,
      want.context,
    ],
    {
      cwd: cfg.root,
      env: { ...env, DOCKER_BUILDKIT: '0' }, // the classic builder, as images.ts: no buildx plugin is needed
      failure: { message: `could not build the ${APP_SERVICE} image from ${path.relative(cfg.root, want.context) || want.context}` },
    },
  );
  return want.tag;
}

/** Removes the api's images of older inputs; one a container still uses is refused, and removed by a later run. */
export async function pruneAppImages(
  ctx: Pick<Ctx, 'exec' | 'cfg'>,
  stack: string,
  keep: string,
  env: Record<string, string>,
): Promise<void> {
  const ask = (args: string[]) => ctx.exec('docker', args, { cwd: ctx.cfg.root, env, nothrow: true });
  for (const ref of (await ask(swarm.images(`${stack}-${APP_SERVICE}`))).stdout.split('\n'))
    if (ref && ref !== keep) await ask(['image', 'rm', ref]);
}
