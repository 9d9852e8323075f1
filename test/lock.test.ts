import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { advisoryLockKey, generateAdvisoryLockId } from '@dbkit/core/migrations/lock';

// Expected values come from golang-migrate's source (v4.18.3): database/util_test.go for the
// generic vectors; for the CLI's key, postgres.go passes (URL path "/app", current_schema(), table).
const key = suite('golang-migrate advisory lock key');

key('matches golang-migrate\'s own test vectors for GenerateAdvisoryLockId', () => {
  assert.is(generateAdvisoryLockId('database_name'), 1764327054);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_1'), 2453313553);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_2'), 235207038);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_1', 'schema_name_2'), 3743845847);
});

key('gives 1726534663 for public, schema_migrations and /app, the key the migrate/migrate CLI takes', () => {
  assert.is(advisoryLockKey('/app'), 1726534663);
  assert.is(advisoryLockKey('/app', 'public', 'schema_migrations'), 1726534663);
});

key('depends on the leading slash, the schema and the table, as golang-migrate\'s does', () => {
  assert.is.not(advisoryLockKey('app'), advisoryLockKey('/app'));
  assert.is.not(advisoryLockKey('/app', 'other'), advisoryLockKey('/app'));
  assert.is.not(advisoryLockKey('/app', 'public', 'other_migrations'), advisoryLockKey('/app'));
});

key('stays within PostgreSQL\'s bigint and golang-migrate\'s uint32 for non-ASCII names', () => {
  const k = advisoryLockKey('/Ωmega', 'schéma');
  assert.ok(Number.isInteger(k) && k >= 0 && k <= 0xffffffff);
});

key.run();
