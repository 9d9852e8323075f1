/**
 * Migrations (issue 3), one run, side by side on one native PostgreSQL 16 server:
 *
 *   - 1,000 generated migrations (create table, insert rows, create index) applied and then all
 *     rolled back by our runner (`db:migrate`, `db:migrate down --all`), by default and with
 *     `--single-transaction`;
 *   - the same SQL through one `psql -1` session each way: the floor;
 *   - dbmate and node-pg-migrate on equivalent files;
 *   - `db:migrate` with nothing pending, as a whole process, against a node process that opens one
 *     verified TLS connection and runs `select 1` (and the peers' own no-change runs).
 *
 * Every contender works in its own database, each a copy (CREATE DATABASE ... TEMPLATE) of the
 * application database as `db:up` provisioned it, and logs in as the same role over verified TLS.
 *
 * Run: node_modules/.bin/tsx bench/migrations.ts   (BENCH_MIGRATIONS=1000, BENCH_CYCLES=3, BENCH_NOCHANGE_N=10)
 */
import fs from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import {
  adminQuery,
  CLI,
  NODE,
  ROOT,
  cli,
  clientBin,
  creds,
  fmtMs,
  libpqEnv,
  machine,
  main,
  makeProject,
  median,
  must,
  printTable,
  progress,
  ratio,
  removeProject,
  timed,
  writeFiles,
  type Creds,
  type Login,
  type Project,
} from './lib.ts';

const COUNT = Number(process.env.BENCH_MIGRATIONS || 1000);
const NOCHANGE_N = Number(process.env.BENCH_NOCHANGE_N || 10);
const CYCLES = Number(process.env.BENCH_CYCLES || 3);
const BENCH_DIR = path.dirname(new URL(import.meta.url).pathname);

/** One realistic, simple migration: a table with an identity key, a few rows, an index. */
function migration(i: number): { name: string; up: string; down: string } {
  const t = `bench_${String(i).padStart(4, '0')}`;
  return {
    name: t,
    up: `CREATE TABLE ${t} (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ${t} (name) SELECT 'row ' || g FROM generate_series(1, 10) AS g;
CREATE INDEX ${t}_name_idx ON ${t} (name);
`,
    down: `DROP TABLE ${t};\n`,
  };
}

const MIGRATIONS = Array.from({ length: COUNT }, (_, i) => migration(i + 1));
const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;
const seq = (i: number) => String(i + 1).padStart(6, '0');

/** The same migrations in each tool's format. */
function filesFor(tool: 'ours' | 'dbmate' | 'npgm'): Record<string, string> {
  const out: Record<string, string> = {};
  MIGRATIONS.forEach((m, i) => {
    if (tool === 'ours') {
      // golang-migrate's names, which our runner reads.
      out[`${seq(i)}_${m.name}.up.sql`] = m.up;
      out[`${seq(i)}_${m.name}.down.sql`] = m.down;
    } else if (tool === 'dbmate') {
      out[`${seq(i)}_${m.name}.sql`] = `-- migrate:up\n${m.up}\n-- migrate:down\n${m.down}`;
    } else {
      // node-pg-migrate wants a 13-digit (millisecond timestamp) prefix; other lengths log an error per file.
      out[`${1_000_000_000_000 + i + 1}_${m.name}.sql`] = `-- Up Migration\n${m.up}\n-- Down Migration\n${m.down}`;
    }
  });
  return out;
}

/** dbmate's own binary: the npm wrapper (node_modules/.bin/dbmate) adds a node start-up to every call. */
function dbmateBin(): string {
  const store = path.join(ROOT, 'node_modules/.pnpm');
  const dir = readdirSync(store).find((d) => d.startsWith(`@dbmate+${process.platform}-${process.arch}@`));
  const bin = dir && path.join(store, dir, 'node_modules/@dbmate', `${process.platform}-${process.arch}`, 'bin/dbmate');
  return bin && existsSync(bin) ? bin : path.join(ROOT, 'node_modules/.bin/dbmate');
}

/** A URL without the password (that travels in PGPASSWORD), for the tools that only take URLs. */
function url(p: Project, c: Creds, login: Login, db: string): string {
  const q = new URLSearchParams({ sslmode: 'verify-full', sslrootcert: c.caFile });
  return `postgres://${encodeURIComponent(login.user)}@127.0.0.1:${p.port}/${encodeURIComponent(db)}?${q}`;
}

async function countTables(p: Project, c: Creds, db: string): Promise<number> {
  const r = await adminQuery(
    p,
    c,
    `select count(*)::int as n from pg_tables where schemaname = 'public' and tablename like 'bench\\_%'`,
    db,
  );
  return r.rows[0].n;
}

async function expectTables(p: Project, c: Creds, db: string, n: number, who: string): Promise<void> {
  const got = await countTables(p, c, db);
  if (got !== n) throw new Error(`${who}: expected ${n} bench tables in ${db}, found ${got}`);
}

interface Contender {
  label: string;
  short: string;
  db: string;
  up: () => Promise<number>;
  down: () => Promise<number>;
  noChange?: () => Promise<number>;
  /** Too slow to repeat: runs in the first cycle only. */
  once?: boolean;
}

main(async () => {
  process.stdout.write(`bench/migrations.ts: ${machine()}\n`);
  progress(`generating ${COUNT} migrations and starting a server (db:secrets, db:secure, db:up)`);
  const p = await makeProject('migrations', filesFor('ours'));
  await cli(['db:secrets'], p.env);
  await cli(['db:secure'], p.env);
  await cli(['db:up'], p.env);
  const c = await creds(p);
  const who = c.migrator; // the role our runner logs in as; every contender uses it

  // Identical databases: copies of the application database as db:up provisioned it (owner, default privileges).
  const dbs = {
    psql: 'bench_psql',
    psqlEach: 'bench_psql_each',
    warm: 'bench_warm',
    ours1: 'bench_ours_one',
    dbmate: 'bench_dbmate',
    npgm: 'bench_npgm',
    npgm1: 'bench_npgm_each',
  };
  for (const db of Object.values(dbs)) {
    await adminQuery(p, c, `CREATE DATABASE ${db} TEMPLATE ${ident(c.database)} OWNER ${ident(who.user)}`);
  }

  // Our runner on its own database: the same secrets, but postgres_db names that database.
  const secrets1 = path.join(p.dir, 'secrets-one-transaction');
  await fs.cp(p.env.DB_SECRETS_DIR, secrets1, { recursive: true });
  await fs.writeFile(path.join(secrets1, 'postgres_db'), dbs.ours1, { mode: 0o600 });
  const ours1Env = { ...p.env, DB_SECRETS_DIR: secrets1 };

  // The psql floor: every up file in order in one file, every down file in reverse order in another.
  const work = path.join(p.dir, 'work');
  // The same, one transaction per migration in one session: what per-migration atomicity costs at
  // least (with asynchronous commits but the last, as our runner commits them).
  const each = (sqls: string[]) =>
    sqls.map((sql, i) => `BEGIN;\n${i < sqls.length - 1 ? 'SET LOCAL synchronous_commit = off;\n' : ''}${sql}COMMIT;\n`).join('');
  await writeFiles(work, {
    'up.sql': MIGRATIONS.map((m) => m.up).join('\n'),
    'down.sql': [...MIGRATIONS]
      .reverse()
      .map((m) => m.down)
      .join(''),
    'up-each.sql': each(MIGRATIONS.map((m) => m.up)),
    'down-each.sql': each([...MIGRATIONS].reverse().map((m) => m.down)),
  });
  await writeFiles(path.join(work, 'dbmate'), filesFor('dbmate'));
  await writeFiles(path.join(work, 'npgm'), filesFor('npgm'));
  const psql = clientBin('psql');
  const psqlFile = (db: string, file: string, single = true) =>
    must(psql, ['-X', '-q', ...(single ? ['-1'] : []), '-v', 'ON_ERROR_STOP=1', '-f', path.join(work, file)], {
      env: libpqEnv(p, c, who, db),
      timeoutMs: 600_000,
    }).then((r) => r.ms);

  progress('warm-up: the psql floor once in a scratch database (not counted)');
  await psqlFile(dbs.warm, 'up.sql');
  await expectTables(p, c, dbs.warm, COUNT, 'warm-up');
  await psqlFile(dbs.warm, 'down.sql');

  const dbmate = dbmateBin();
  const dbmateEnv = { DATABASE_URL: url(p, c, who, dbs.dbmate), PGPASSWORD: who.password };
  const dbmateRun = (args: string[]) =>
    must(dbmate, ['--no-dump-schema', '--migrations-dir', path.join(work, 'dbmate'), ...args], {
      env: dbmateEnv,
      cwd: work,
      timeoutMs: 600_000,
    });
  const npgm = path.join(ROOT, 'node_modules/.bin/node-pg-migrate');
  // Generous to node-pg-migrate: no per-statement logging. TLS verification as everyone else's.
  const npgmRun = (db: string, args: string[]) =>
    must(npgm, [...args, '--migrations-dir', path.join(work, 'npgm'), '--no-verbose', '--reject-unauthorized'], {
      env: { DATABASE_URL: url(p, c, who, db), PGPASSWORD: who.password },
      cwd: work,
      timeoutMs: 600_000,
    });

  const oursInside = { up: [] as number[], down: [] as number[] };
  // The runner's own summary: "applied 1000 migrations in 8.12 s (version ...)" or "... in 950 ms".
  const inside = (out: string) => {
    const m = /migrations? in ([\d.]+) (ms|s)\b/.exec(out);
    return m ? Number(m[1]) * (m[2] === 's' ? 1000 : 1) : NaN;
  };
  const contenders: Contender[] = [
    {
      label: 'psql -1 -f (one session, one transaction each way; the floor)',
      short: 'psql -1',
      db: dbs.psql,
      up: () => psqlFile(dbs.psql, 'up.sql'),
      down: () => psqlFile(dbs.psql, 'down.sql'),
    },
    {
      label: 'psql -f, one transaction per migration, async commit but the last',
      short: 'psql, tx per migration',
      db: dbs.psqlEach,
      up: () => psqlFile(dbs.psqlEach, 'up-each.sql', false),
      down: () => psqlFile(dbs.psqlEach, 'down-each.sql', false),
    },
    {
      label: 'ours: node dist/cli.js db:migrate / db:migrate down --all',
      short: 'ours',
      db: c.database,
      up: async () => {
        const r = await cli(['db:migrate'], p.env, { timeoutMs: 600_000 });
        oursInside.up.push(inside(r.stdout + r.stderr));
        return r.ms;
      },
      down: async () => {
        const r = await cli(['db:migrate', '--yes', 'down', '--all'], p.env, { timeoutMs: 600_000 });
        oursInside.down.push(inside(r.stdout + r.stderr));
        return r.ms;
      },
      noChange: async () => {
        const r = await cli(['db:migrate'], p.env);
        if (!/no change/.test(r.stdout + r.stderr)) throw new Error(`db:migrate had something to do: ${r.stdout}`);
        return r.ms;
      },
    },
    {
      label: 'ours --single-transaction: the same, one transaction each way',
      short: 'ours, one transaction',
      db: dbs.ours1,
      up: async () => {
        const r = await cli(['db:migrate', '--single-transaction'], ours1Env, { timeoutMs: 600_000 });
        return r.ms;
      },
      down: async () => (await cli(['db:migrate', '--yes', 'down', '--all', '--single-transaction'], ours1Env, { timeoutMs: 600_000 })).ms,
    },
    {
      short: 'dbmate',
      label: `dbmate ${path.basename(path.dirname(path.dirname(dbmate))) === '.bin' ? '(npm wrapper)' : '(native binary)'}: migrate / ${COUNT} x rollback`,
      db: dbs.dbmate,
      up: async () => (await dbmateRun(['migrate'])).ms,
      // dbmate rolls back one migration per call and has no "all": the only way is one call each.
      down: async () => {
        const t0 = performance.now();
        for (let i = 0; i < COUNT; i++) {
          await dbmateRun(['rollback']);
          if (performance.now() - t0 > 20 * 60_000) throw new Error(`dbmate rollback: ${i + 1} calls took more than 20 minutes; giving up`);
        }
        return performance.now() - t0;
      },
      noChange: async () => (await dbmateRun(['migrate'])).ms,
      once: true,
    },
    {
      short: 'node-pg-migrate',
      label: `node-pg-migrate (default: one transaction for the run): up / down ${COUNT}`,
      db: dbs.npgm,
      up: async () => (await npgmRun(dbs.npgm, ['up'])).ms,
      down: async () => (await npgmRun(dbs.npgm, ['down', String(COUNT)])).ms,
      noChange: async () => (await npgmRun(dbs.npgm, ['up'])).ms,
    },
    {
      short: 'node-pg-migrate, tx each',
      label: `node-pg-migrate --no-single-transaction (one per migration, as ours)`,
      db: dbs.npgm1,
      up: async () => (await npgmRun(dbs.npgm1, ['up', '--no-single-transaction'])).ms,
      down: async () => (await npgmRun(dbs.npgm1, ['down', String(COUNT), '--no-single-transaction'])).ms,
    },
  ];

  // Several cycles of up then down, the order rotated each cycle, medians reported: fsync latency on
  // a shared machine drifts by 2x within minutes, and a single sequential pass would charge that
  // drift to whichever tool ran at the wrong moment. dbmate's roll-back (one process per migration)
  // takes minutes, so it runs in the first cycle only.
  const up = new Map<string, number[]>(contenders.map((k) => [k.label, []]));
  const down = new Map<string, number[]>(contenders.map((k) => [k.label, []]));
  const noChange = new Map<string, number[]>();
  const baseline = 'node + pg: one TLS connection, select 1 (baseline)';
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const order = contenders.map((_, i) => contenders[(i + cycle) % contenders.length]).filter((k) => cycle === 0 || !k.once);
    for (const k of order) {
      progress(`cycle ${cycle + 1}/${CYCLES} up: ${k.label}`);
      up.get(k.label)!.push(await k.up());
      await expectTables(p, c, k.db, COUNT, k.label);
    }
    if (cycle === 0) {
      progress(`nothing pending: ${NOCHANGE_N} rounds, interleaved`);
      const probes: [string, () => Promise<number>][] = [
        [baseline, async () => (await must(NODE, [path.join(BENCH_DIR, 'tls-select1.mjs')], { env: libpqEnv(p, c, who) })).ms],
        ['psql -c "select 1" over TLS', async () => (await must(psql, ['-X', '-q', '-c', 'select 1'], { env: libpqEnv(p, c, who) })).ms],
        ...contenders.filter((k) => k.noChange).map((k) => [k.short, k.noChange!] as [string, () => Promise<number>]),
      ];
      for (let i = -1; i < NOCHANGE_N; i++) {
        for (const [label, fn] of probes) {
          const ms = await fn();
          if (i >= 0) (noChange.get(label) ?? noChange.set(label, []).get(label)!).push(ms); // round -1 warms up
        }
      }
    }
    for (const k of order) {
      progress(`cycle ${cycle + 1}/${CYCLES} down: ${k.label}`);
      down.get(k.label)!.push(await k.down());
      await expectTables(p, c, k.db, 0, k.label);
    }
  }

  const med = (m: Map<string, number[]>, k: string) => median(m.get(k)!);
  const total = (k: string) => median(up.get(k)!.map((u, i) => u + down.get(k)![i]));
  const floor = contenders[0].label;
  const fu = med(up, floor);
  const fd = med(down, floor);
  const ft = total(floor);
  printTable(
    `${COUNT} migrations (create table + insert 10 rows + create index; down: drop table), each tool in its own copy of the app database; medians of ${CYCLES} cycles`,
    ['', 'cycles', 'up', 'down', 'up+down', 'up vs psql', 'down vs psql', 'total vs psql'],
    [
      ...contenders.map((k) => {
        const u = med(up, k.label);
        const d = med(down, k.label);
        const t = total(k.label);
        return [k.label, String(up.get(k.label)!.length), fmtMs(u), fmtMs(d), fmtMs(t), ratio(u, fu), ratio(d, fd), ratio(t, ft)];
      }),
      (() => {
        const u = median(oursInside.up);
        const d = median(oursInside.down);
        const t = median(oursInside.up.map((x, i) => x + oursInside.down[i]));
        return [
          '  ours, inside the runner (its own "in N s")',
          String(oursInside.up.length),
          fmtMs(u),
          fmtMs(d),
          fmtMs(t),
          ratio(u, fu),
          ratio(d, fd),
          ratio(t, ft),
        ];
      })(),
    ],
  );
  process.stdout.write(
    `\nevery cycle (up / down, in run order):\n${contenders
      .map(
        (k) =>
          `  ${k.short.padEnd(26)} ${up
            .get(k.label)!
            .map((u, i) => `${fmtMs(u)} / ${fmtMs(down.get(k.label)![i])}`)
            .join(', ')}`,
      )
      .join('\n')}\n`,
  );
  const base = median(noChange.get(baseline)!);
  printTable(
    `nothing pending, whole process (N=${NOCHANGE_N}; ours lists and checks the ${COUNT * 2} file names, reads no file)`,
    ['', 'median', 'min', 'max', 'ratio'],
    [...noChange].map(([label, xs]) => [label, fmtMs(median(xs)), fmtMs(Math.min(...xs)), fmtMs(Math.max(...xs)), ratio(median(xs), base)]),
  );
  // Each of ours against the peers' runs that promise the same: a transaction per migration (dbmate,
  // node-pg-migrate --no-single-transaction), or one for the whole run (node-pg-migrate's default).
  const byShort = (short: string) => total(contenders.find((k) => k.short === short)!.label);
  const pair = (what: string, ours: number, peers: [string, number][]) => {
    const fastest = peers.reduce((a, b) => (b[1] < a[1] ? b : a));
    return `  ${what}: ours ${fmtMs(ours)} vs ${fastest[0]} ${fmtMs(fastest[1])} -> ${ours < fastest[1] ? 'met' : 'MISSED'} (${ratio(ours, fastest[1])})`;
  };
  const oursTotal = byShort('ours');
  const ncOurs = median(noChange.get('ours')!);
  process.stdout.write(`
targets (issue 3):
  within 2x of the psql floor, ${COUNT} up + down: ${ratio(oursTotal, ft)} -> ${oursTotal <= 2 * ft ? 'met' : 'MISSED'}
  faster than both peers (up + down), each against the peers' runs with the same guarantee:
${pair('a transaction per migration', oursTotal, [
  ['dbmate', byShort('dbmate')],
  ['node-pg-migrate --no-single-transaction', byShort('node-pg-migrate, tx each')],
])}
${pair('one transaction for the run', byShort('ours, one transaction'), [['node-pg-migrate (default)', byShort('node-pg-migrate')]])}
${pair('ours by default against every peer run', oursTotal, [
  ['dbmate', byShort('dbmate')],
  ['node-pg-migrate (default)', byShort('node-pg-migrate')],
  ['node-pg-migrate --no-single-transaction', byShort('node-pg-migrate, tx each')],
])}
  no-change run as fast as node + one TLS connection: ${ratio(ncOurs, base)} (${ncOurs >= base ? `${fmtMs(ncOurs - base)} more` : `${fmtMs(base - ncOurs)} less`})
`);
  await removeProject(p);
});
