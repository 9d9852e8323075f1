-- An example migration: golang-migrate names (NNNNNN_name.up.sql / .down.sql), plain SQL.
CREATE TABLE accounts (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email      text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
