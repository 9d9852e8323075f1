// golang-migrate's advisory lock key (database/util.go GenerateAdvisoryLockId, salt 1486364155),
// so our runner and the migrate/migrate container exclude each other.
const SALT = 1486364155;

let table: Uint32Array | undefined;
function crc32(bytes: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = table[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * `dbname` as golang-migrate's CLI sees it: the URL path with its leading slash ("/app").
 * Node's zlib has crc32 only from Node 22, hence the small table above.
 */
export function advisoryLockKey(dbname: string, schema = 'public', table_ = 'schema_migrations'): number {
  const sum = crc32(new TextEncoder().encode([schema, table_, dbname].join('\0')));
  return Math.imul(sum, SALT) >>> 0;
}
