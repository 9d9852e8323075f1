import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { connect, withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { libpqPassword, nodePgPassword, pgSaslprep, tableRanges } from '@dbkit/core/saslprep';
import * as scram from '@dbkit/core/scram';
import { appTarget, cli, makeProject, ok, ownerTarget, readSecretFile, removeProject, run, type Project } from './setup/project.ts';
import { superuser } from './setup/backup.ts';
import { setUp } from './setup/hooks.ts';
import { output } from './setup/engine.ts';

// The characters of the report: a variation selector and a soft hyphen (mapped to nothing), the
// Ogham space mark (a non-ASCII space, mapped to U+0020), and more of each kind, and compatibility
// forms that NFKC changes.
const FIRST = 'pw\uFE0F-\u00AD-\u1680-\u200B-\u3000-\uFF50\uFB01-end';
const SECOND = 'r\u2060o\u00A0t\u180Ba\u034Ft\u202Fe\uFEFF\u2003d-\u2126';
const MIGRATOR = 'own\u00AD\u1680er-\uFE0F\u00BD';

const unit = suite("PostgreSQL's SASLprep");

unit('maps U+FE0F and U+00AD to nothing, U+1680 to a space, and normalises with NFKC', () => {
  assert.equal(pgSaslprep('a\uFE0Fb\u00ADc\u1680d\uFB01'), { ok: true, value: 'abc dfi' });
  assert.is(libpqPassword(FIRST), 'pw-- - - -pfi-end');
  assert.is(nodePgPassword(FIRST), libpqPassword(FIRST));
});

unit('leaves ASCII as it is, control characters included, as PostgreSQL does', () => {
  assert.equal(pgSaslprep('a\u0007b'), { ok: true, value: 'a\u0007b' });
});

unit('finds what PostgreSQL prohibits, after mapping and before NFKC, and libpq then uses the password as typed', () => {
  assert.is(pgSaslprep('a\u0085').ok, false); // C.2.2
  assert.is(pgSaslprep('x\u{1F100}').ok, false); // unassigned in Unicode 3.2, although NFKC makes it "0."
  assert.is(pgSaslprep('a\u0340').ok, false); // C.8, although NFKC makes it U+0300
  assert.is(pgSaslprep('\u05D0a\u05D0').ok, false); // right-to-left and left-to-right together
  assert.is(pgSaslprep('\u05D01').ok, false); // right-to-left, not at both ends
  assert.is(pgSaslprep('\u00AD\uFE0F').ok, false); // nothing left
  assert.is(libpqPassword('x\u{1F100}'), 'x\u{1F100}');
  assert.is(nodePgPassword('x\u{1F100}'), 'x0.');
});

unit('passwordProblem accepts what both clients hash alike and refuses the rest, without quoting the password', () => {
  for (const p of [FIRST, SECOND, MIGRATOR, 'plain-ascii', 'p\u00E4ssw\u00F6rd\u{1F600}'])
    assert.is(scram.passwordProblem(p), undefined, p);
  const mixed = scram.passwordProblem('secret\u00AD\u0085');
  assert.match(
    String(mixed),
    /U\+0085 is a character SASLprep prohibits.*libpq \(psql, pg_dump\) uses it as typed while node-postgres .* maps and normalises it/,
  );
  assert.not.ok(String(mixed).includes('secret'));
  assert.match(String(scram.passwordProblem('x\u{1F100}')), /U\+1F100 is not assigned in Unicode 3\.2/);
  assert.match(String(scram.passwordProblem('\u00E9'.repeat(513))), /1026 bytes long .* over 1024 bytes/);
});

unit.run();

interface Ctx {
  p?: Project;
}

/** libpq itself (psql) logging in as `login` with verify-full and this password; the password goes in the environment. */
async function psqlLogin(p: Project, login: 'app' | 'migrate', password: string) {
  const t = login === 'app' ? await appTarget(p) : await ownerTarget(p);
  return run('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: 'localhost',
    PGPORT: String(p.port),
    PGUSER: t.user,
    PGDATABASE: t.database,
    PGPASSWORD: password,
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
    PGCONNECT_TIMEOUT: '10',
  });
}

/** node-postgres logging in as `login` with this password. */
async function nodeLogin(p: Project, login: 'app' | 'migrate', password: string): Promise<string> {
  const t = login === 'app' ? await appTarget(p) : await ownerTarget(p);
  const c = await connect({ ...t, password });
  try {
    return (await c.query('SELECT current_user AS u')).rows[0].u;
  } finally {
    await c.end();
  }
}

async function bothLogIn(p: Project, login: 'app' | 'migrate', password: string): Promise<void> {
  const user = await readSecretFile(p, `${login}_user`);
  const r = await psqlLogin(p, login, password);
  assert.is(r.code, 0, `psql: ${output(r)}`);
  assert.is(r.stdout.trim(), user);
  assert.is(await nodeLogin(p, login, password), user);
}

const writeSecret = (p: Project, name: string, value: string) => fs.writeFile(path.join(p.secretsDir, name), value, { mode: 0o600 });

const live = suite<Ctx>('passwords that SASLprep changes, on a running server', {});

setUp(live, async (ctx) => {
  ctx.p = await makeProject();
  await ok(['db:secrets'], ctx.p.env);
  await writeSecret(ctx.p, 'app_password', FIRST);
  await writeSecret(ctx.p, 'migrate_password', MIGRATOR);
  await ok(['db:secure'], ctx.p.env);
});
live.after(async (ctx) => {
  await removeProject(ctx.p);
});

live('db:up stores verifiers that psql (libpq) and node-postgres both log in with', async (ctx) => {
  const p = ctx.p!;
  const up = await cli(['db:up'], p.env);
  assert.is(up.code, 0, output(up));
  await bothLogIn(p, 'app', FIRST);
  await bothLogIn(p, 'migrate', MIGRATOR);
});

live('after a rotation to another such password, both log in with the new one and neither with the old', async (ctx) => {
  const p = ctx.p!;
  await writeSecret(p, 'app_password', SECOND);
  await ok(['db:secrets:rotate', 'app', '--from-file'], p.env);
  await bothLogIn(p, 'app', SECOND);
  assert.is.not((await psqlLogin(p, 'app', FIRST)).code, 0);
  assert.ok(
    await nodeLogin(p, 'app', FIRST).then(
      () => false,
      () => true,
    ),
    'node-postgres logged in with the old password',
  );
});

live('a password the two clients would hash differently is refused before anything is stored, naming the role', async (ctx) => {
  const p = ctx.p!;
  const bad = 'conflict\u00AD\u0085';
  await writeSecret(p, 'app_password', bad);
  const r = await cli(['db:secrets:rotate', 'app', '--from-file'], p.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /error: the password of role app cannot be stored: U\+0085 is a character SASLprep prohibits/);
  assert.not.ok(output(r).includes('conflict'));
  await writeSecret(p, 'app_password', SECOND);
  await bothLogIn(p, 'app', SECOND);
});

live("the verifier is the server's own, at every edge of every SASLprep table", async (ctx) => {
  const p = ctx.p!;
  const around = (ranges: [number, number][]) =>
    ranges.flatMap(([a, b]) => [a - 1, a, a + 1, b - 1, b, b + 1]).filter((c) => c > 0 && (c < 0xd800 || c > 0xdfff) && c <= 0x10ffff);
  const t = tableRanges();
  const strings = new Set<string>();
  for (const c of new Set(Object.values(t).flatMap(around))) strings.add(String.fromCodePoint(c) + '\u00AD');
  // Which characters count as left-to-right or right-to-left: between two Hebrew letters, after a digit.
  for (const c of new Set([...around(t.l), ...around(t.randAL)])) {
    strings.add('\u05D0' + String.fromCodePoint(c) + '\u00AD\u05D0');
    strings.add('1' + String.fromCodePoint(c) + '\u00AD');
  }
  const list = [...strings];
  const verifiers = await withClient(await superuser(p, 'postgres'), async (c) => {
    await c.query(`SET scram_iterations = 1; SET password_encryption = 'scram-sha-256';
      CREATE TEMP TABLE oracle (id int PRIMARY KEY, pw text NOT NULL, v text);
      CREATE ROLE saslprep_oracle NOLOGIN`);
    try {
      await c.query('INSERT INTO oracle (id, pw) SELECT i, p FROM unnest($1::text[]) WITH ORDINALITY AS t(p, i)', [list]);
      // A batch per transaction: every ALTER ROLE leaves a row version that only a later transaction may prune.
      for (let i = 1; i <= list.length; i += 1000) {
        await c.query(`DO $$ DECLARE r record; BEGIN
          FOR r IN SELECT id, pw FROM oracle WHERE id BETWEEN ${i} AND ${i + 999} LOOP
            EXECUTE format('ALTER ROLE saslprep_oracle PASSWORD %L', r.pw);
            UPDATE oracle SET v = (SELECT rolpassword FROM pg_authid WHERE rolname = 'saslprep_oracle') WHERE id = r.id;
          END LOOP; END $$`);
      }
      return (await c.query<{ pw: string; v: string }>('SELECT pw, v FROM oracle ORDER BY id')).rows;
    } finally {
      await c.query('DROP ROLE saslprep_oracle');
    }
  });
  const wrong: string[] = [];
  for (const { pw, v } of verifiers) {
    const [, iter, salt, stored] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(v)!;
    const key = pbkdf2Sync(Buffer.from(libpqPassword(pw), 'utf8'), Buffer.from(salt, 'base64'), Number(iter), 32, 'sha256');
    const mine = createHash('sha256').update(createHmac('sha256', key).update('Client Key').digest()).digest('base64');
    if (mine !== stored) wrong.push([...pw].map((ch) => `U+${ch.codePointAt(0)!.toString(16).toUpperCase()}`).join(' '));
  }
  assert.ok(list.length > 5000, `only ${list.length} strings`);
  assert.equal(wrong.slice(0, 20), [], `${wrong.length} of ${list.length} differ from the server`);
});

live.run();
