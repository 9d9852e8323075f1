// What a backup promises about its source (rows, sequences, schema), read alike in the dump's
// snapshot and in a verification's scratch copy. pg_catalog first: names print schema-qualified.
const PRELUDE = 'SET search_path = pg_catalog;\n';

const USER_NS = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

/** `table <name>` with its exact row count and `sequence <name>` with its last value; query_to_xml keeps the caller's snapshot. */
export const DATA_SQL = `${PRELUDE}SELECT k, v FROM (
  SELECT 'table ' || c.oid::regclass::text AS k,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass), false, true, '')))[1]::text AS v
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'r' AND ${USER_NS} AND has_table_privilege(c.oid, 'SELECT')
  UNION ALL
  SELECT 'sequence ' || c.oid::regclass::text, coalesce(s.last_value::text, 'unset')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname
   WHERE c.relkind = 'S' AND ${USER_NS} AND has_sequence_privilege(c.oid, 'SELECT')
) x ORDER BY k`;

/** One line per schema object with what defines it; whitespace runs become one space (docker's channel splits rows at newlines). */
export const SCHEMA_SQL = `${PRELUDE}SELECT l FROM (SELECT regexp_replace(line, '\\s+', ' ', 'g') AS l FROM (
  SELECT 'schema ' || quote_ident(n.nspname) || ' owner ' || pg_get_userbyid(n.nspowner) || ' acl ' || coalesce(n.nspacl::text, '-') AS line
    FROM pg_namespace n WHERE ${USER_NS}
  UNION ALL
  SELECT 'relation ' || c.oid::regclass::text || ' kind ' || c.relkind::text || ' persistence ' || c.relpersistence::text || ' rls ' || c.relrowsecurity::text
         || ' owner ' || pg_get_userbyid(c.relowner) || ' acl ' || coalesce(c.relacl::text, '-')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${USER_NS}
  UNION ALL
  SELECT 'column ' || c.oid::regclass::text || '.' || quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
         || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
         || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
         || ' #' || (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum <= a.attnum)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${USER_NS}
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${USER_NS}
  UNION ALL
  SELECT 'constraint ' || coalesce(co.conrelid::regclass::text, co.contypid::regtype::text) || ' ' || quote_ident(co.conname) || ' ' || pg_get_constraintdef(co.oid)
    FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE ${USER_NS}
  UNION ALL
  SELECT 'sequence ' || s.seqrelid::regclass::text || ' ' || format_type(s.seqtypid, NULL) || ' start ' || s.seqstart || ' by ' || s.seqincrement
         || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache || ' cycle ' || s.seqcycle::text
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${USER_NS}
  UNION ALL
  SELECT 'view ' || c.oid::regclass::text || ' ' || pg_get_viewdef(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND ${USER_NS}
  UNION ALL
  SELECT 'routine ' || p.oid::regprocedure::text || ' owner ' || pg_get_userbyid(p.proowner) || ' acl ' || coalesce(p.proacl::text, '-')
         || ' ' || CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE md5(pg_get_functiondef(p.oid)) END
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${USER_NS}
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND ${USER_NS}
  UNION ALL
  SELECT 'policy ' || pol.polrelid::regclass::text || ' ' || quote_ident(pol.polname) || ' ' || pol.polcmd::text || ' ' || pol.polpermissive::text
         || coalesce(' using ' || pg_get_expr(pol.polqual, pol.polrelid), '') || coalesce(' check ' || pg_get_expr(pol.polwithcheck, pol.polrelid), '')
    FROM pg_policy pol
  UNION ALL
  SELECT 'type ' || t.oid::regtype::text || ' ' || t.typtype::text || ' owner ' || pg_get_userbyid(t.typowner)
         || coalesce(' labels ' || (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '')
         || CASE WHEN t.typtype = 'd' THEN ' over ' || format_type(t.typbasetype, t.typtypmod) ELSE '' END
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typtype IN ('e', 'd', 'r', 'm') AND ${USER_NS}
  UNION ALL
  SELECT 'extension ' || quote_ident(x.extname) || ' ' || x.extversion || ' in ' || quote_ident(x.extnamespace::regnamespace::text) FROM pg_extension x
  UNION ALL
  SELECT 'default privileges for ' || pg_get_userbyid(da.defaclrole) || ' in ' || coalesce(da.defaclnamespace::regnamespace::text, '*')
         || ' on ' || da.defaclobjtype::text || ' ' || da.defaclacl::text
    FROM pg_default_acl da
) x) y ORDER BY l COLLATE "C"`;

/** Rows from either channel (pg's arrays or the superuser's text rows) as a map. */
export function dataMap(rows: readonly (readonly unknown[])[]): Record<string, string> {
  return Object.fromEntries(rows.map((r) => [String(r[0]), String(r[1] ?? '')]));
}

export function dataDiff(expected: Record<string, string>, actual: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(expected)) {
    const got = actual[k];
    const unit = k.startsWith('table ') ? ' rows' : '';
    if (got === undefined) out.push(`${k} is missing`);
    else if (got !== v) out.push(`${k}: ${v}${unit} in the source, ${got}${unit} restored`);
  }
  return out;
}

export function schemaDiff(expected: readonly string[], actual: readonly string[], max = 3): string[] {
  const a = new Set(actual);
  const e = new Set(expected);
  return [
    ...expected.filter((l) => !a.has(l)).map((l) => `missing after restore: ${l}`),
    ...actual.filter((l) => !e.has(l)).map((l) => `only after restore: ${l}`),
  ].slice(0, max);
}
