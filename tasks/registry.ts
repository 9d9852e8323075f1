import { withImpliedFlags, type Task } from './task.ts';
import { helpTask } from './help.ts';
import { task as up } from './up.ts';
import { task as down } from './down.ts';
import { task as logs } from './logs.ts';
import { task as bash } from './bash.ts';
import { task as psql } from './psql.ts';
import { task as fresh } from './fresh.ts';
import { task as del } from './delete.ts';
import { task as secure } from './secure.ts';
import { task as secrets } from './secrets.ts';
import { task as seed } from './seed.ts';
import { task as migrate } from './migrate.ts';
import { task as rollback } from './rollback.ts';
import { task as migrateCreate } from './migrate-create.ts';
import { task as migrateForce } from './migrate-force.ts';
import { task as status } from './status.ts';
import { task as rotate } from './secrets-rotate.ts';
import { task as doctor } from './doctor.ts';
import { task as backup } from './backup.ts';
import { task as backupVerify } from './backup-verify.ts';
import { task as restore } from './restore.ts';
import { task as imagesBuild } from './images-build.ts';
import { task as replica } from './replica.ts';
import { task as promote } from './promote.ts';
import { task as stackGenerate } from './stack-generate.ts';

/** Every task, in the order help lists them. */
const declared: Task<unknown>[] = [
  up,
  down,
  logs,
  bash,
  psql,
  status,
  migrate,
  rollback,
  migrateCreate,
  migrateForce,
  seed,
  secrets,
  rotate,
  secure,
  doctor,
  backup,
  backupVerify,
  restore,
  replica,
  promote,
  fresh,
  del,
  imagesBuild,
  stackGenerate,
  helpTask(() => tasks),
];

/** As the entry point and help see them (a destructive task takes --yes). */
export const tasks: readonly Task<unknown>[] = declared.map(withImpliedFlags);
