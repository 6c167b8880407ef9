#!/bin/sh
# Runs once, when the postgres container initialises an empty volume (docker-entrypoint-initdb.d).
# POSTGRES_USER is the bootstrap superuser; nothing of ProgressDB connects as it.
#   progressdb_owner  owns the database and schema; runs the migrations (the `migrate` service)
#   progressdb_app    what the API replicas connect as: granted by each migration exactly what
#                     the service needs, never ownership, TRUNCATE, or DELETE on the log tables
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_pw="$POSTGRES_OWNER_PASSWORD" -v app_pw="$POSTGRES_APP_PASSWORD" <<'SQL'
create role progressdb_owner login password :'owner_pw';
create role progressdb_app login password :'app_pw';
alter database progressdb owner to progressdb_owner;
alter schema public owner to progressdb_owner;
revoke create on schema public from public;
SQL
