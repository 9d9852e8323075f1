import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { libpqPassword, MAX_PASSWORD_BYTES, nodePgPassword, pgSaslprep } from './saslprep.ts';

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores, sent instead of the password (a logged statement then
 * holds none, as psql's \password); derived from the password as libpq prepares it.
 */
export function scramVerifier(password: string, iterations = 4096, salt = randomBytes(16)): string {
  const salted = pbkdf2Sync(Buffer.from(libpqPassword(password), 'utf8'), salt, iterations, 32, 'sha256');
  const hmac = (key: Buffer, msg: string) => createHmac('sha256', key).update(msg).digest();
  const storedKey = createHash('sha256').update(hmac(salted, 'Client Key')).digest();
  const serverKey = hmac(salted, 'Server Key');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Why no verifier would let both libpq and node-postgres log in with this password (without quoting it); else undefined. */
export function passwordProblem(password: string): string | undefined {
  const bytes = Buffer.byteLength(password, 'utf8');
  if (bytes > MAX_PASSWORD_BYTES)
    return `it is ${bytes} bytes long in UTF-8; libpq (psql, pg_dump) refuses passwords over ${MAX_PASSWORD_BYTES} bytes`;
  if (libpqPassword(password) === nodePgPassword(password)) return undefined;
  const p = pgSaslprep(password);
  const why = p.ok ? 'SASLprep' : p.why;
  return `${why}, so libpq (psql, pg_dump) uses it as typed while node-postgres (which pg-deploy and most Node applications use) maps and normalises it: the two log in with different passwords`;
}
