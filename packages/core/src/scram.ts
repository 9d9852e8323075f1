import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { libpqPassword, MAX_PASSWORD_BYTES, nodePgPassword, pgSaslprep } from './saslprep.ts';

/**
 * A SCRAM-SHA-256 verifier (RFC 7677), the form PostgreSQL stores: `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`.
 * We send this, never the password, in CREATE/ALTER ROLE: the server stores it as given, and a
 * failing statement that the server logs then holds no usable password (libpq's
 * PQencryptPasswordConn does the same for psql's \password).
 * The key is derived from the password as libpq prepares it (PostgreSQL's SASLprep, see
 * saslprep.ts), which is also what node-postgres derives it from for every password that
 * `passwordProblem` accepts. Passwords we generate are ASCII, which SASLprep leaves as they are.
 */
export function scramVerifier(password: string, iterations = 4096, salt = randomBytes(16)): string {
  const salted = pbkdf2Sync(Buffer.from(libpqPassword(password), 'utf8'), salt, iterations, 32, 'sha256');
  const hmac = (key: Buffer, msg: string) => createHmac('sha256', key).update(msg).digest();
  const storedKey = createHash('sha256').update(hmac(salted, 'Client Key')).digest();
  const serverKey = hmac(salted, 'Server Key');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/**
 * Why no stored verifier would let both kinds of client log in with this password, or undefined
 * when one does. libpq (psql, pg_dump) refuses a password over 1024 bytes; and where PostgreSQL's
 * SASLprep finds the password invalid, libpq hashes it as typed while node-postgres (which every
 * task here uses) still maps and normalises it: when that changes the text, they hash different
 * strings. Said without quoting the password.
 */
export function passwordProblem(password: string): string | undefined {
  const bytes = Buffer.byteLength(password, 'utf8');
  if (bytes > MAX_PASSWORD_BYTES) return `it is ${bytes} bytes long in UTF-8; libpq (psql, pg_dump) refuses passwords over ${MAX_PASSWORD_BYTES} bytes`;
  if (libpqPassword(password) === nodePgPassword(password)) return undefined;
  const p = pgSaslprep(password);
  const why = p.ok ? 'SASLprep' : p.why;
  return `${why}, so libpq (psql, pg_dump) uses it as typed while node-postgres (which pg-deploy and most Node applications use) maps and normalises it: the two log in with different passwords`;
}
