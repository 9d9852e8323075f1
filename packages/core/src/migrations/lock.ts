// golang-migrate's advisory lock key, so our runner and the migrate/migrate container exclude each
// other. Checked against golang-migrate's source (tags v4.15.0 to v4.19.1):
// - database/util.go GenerateAdvisoryLockId(databaseName, additionalNames...) joins
//   `additionalNames..., databaseName` with NUL bytes (the database name goes LAST), takes
//   crc32.ChecksumIEEE and multiplies it by the salt 1486364155 in uint32 arithmetic.
// - database/postgres/postgres.go Lock() calls it with (DatabaseName, migrationsSchemaName,
//   migrationsTableName) since v4.15.0 (v4.14 and older leave the table out: another key, so pin the
//   image at v4.15 or later); Open() sets DatabaseName to the URL's path, leading slash included
//   ("/app"); migrationsSchemaName is current_schema() unless x-migrations-table names one.
// - database/util_test.go vectors: ("database_name") -> 1764327054,
//   ("database_name", "schema_name_1") -> 2453313553.
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

/** golang-migrate's GenerateAdvisoryLockId, same arguments, same order. Node's zlib has crc32 only from Node 22. */
export function generateAdvisoryLockId(databaseName: string, ...additionalNames: string[]): number {
  const text = additionalNames.length ? [...additionalNames, databaseName].join('\0') : databaseName;
  return Math.imul(crc32(new TextEncoder().encode(text)), SALT) >>> 0;
}

/** The key golang-migrate's CLI takes for `dbname` (the URL path, with its slash: "/app"). */
export function advisoryLockKey(dbname: string, schema = 'public', migrationsTable = 'schema_migrations'): number {
  return generateAdvisoryLockId(dbname, schema, migrationsTable);
}
