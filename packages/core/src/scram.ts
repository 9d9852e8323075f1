import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

/**
 * A SCRAM-SHA-256 verifier (RFC 7677), the form PostgreSQL stores: `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`.
 * We send this, never the password, in CREATE/ALTER ROLE: the server stores it as given, and a
 * failing statement that the server logs then holds no usable password (libpq's
 * PQencryptPasswordConn does the same for psql's \password).
 * Passwords we generate are ASCII, for which SASLprep is the identity; others are NFKC-normalised,
 * which is what SASLprep amounts to for ordinary text.
 */
export function scramVerifier(password: string, iterations = 4096, salt = randomBytes(16)): string {
  const salted = pbkdf2Sync(Buffer.from(password.normalize('NFKC'), 'utf8'), salt, iterations, 32, 'sha256');
  const hmac = (key: Buffer, msg: string) => createHmac('sha256', key).update(msg).digest();
  const storedKey = createHash('sha256').update(hmac(salted, 'Client Key')).digest();
  const serverKey = hmac(salted, 'Server Key');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
