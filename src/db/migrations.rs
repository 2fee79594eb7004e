//! Numbered SQL migrations embedded from `schema/NNNN_name.sql`, applied in order at
//! every start and by `lanchat --migrate`. Each runs in its own transaction and is
//! recorded with its checksum; an edited applied migration, or a database written
//! by a newer lanchat, is refused rather than guessed at.

use include_dir::{Dir, include_dir};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use super::{DbError, now_ms};

static SCHEMA_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/schema");

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub sql: &'static str,
    pub checksum: String,
}

/// The migrations embedded in this binary, sorted by version.
pub fn embedded() -> Result<Vec<Migration>, DbError> {
    let mut migrations = Vec::new();
    for file in SCHEMA_DIR.files() {
        let file_name = file
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(stem) = file_name.strip_suffix(".sql") else {
            continue;
        };
        let (number, name) = stem.split_once('_').ok_or_else(|| {
            DbError::Migration(format!("migration file {file_name} is not NNNN_name.sql"))
        })?;
        let version: i64 = number.parse().map_err(|_| {
            DbError::Migration(format!("migration file {file_name} has no leading number"))
        })?;
        let sql = file.contents_utf8().ok_or_else(|| {
            DbError::Migration(format!("migration file {file_name} is not UTF-8"))
        })?;
        migrations.push(Migration {
            version,
            name: name.to_owned(),
            sql,
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        });
    }
    migrations.sort_by_key(|m| m.version);
    for pair in migrations.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(DbError::Migration(format!(
                "two migrations share version {}",
                pair[0].version
            )));
        }
    }
    Ok(migrations)
}

/// Applies every pending migration; returns the ones applied (empty when none was
/// pending).
pub fn migrate(conn: &mut Connection) -> Result<Vec<Migration>, DbError> {
    migrate_with(conn, &embedded()?)
}

pub fn migrate_with(
    conn: &mut Connection,
    migrations: &[Migration],
) -> Result<Vec<Migration>, DbError> {
    // Functions the migrations' SQL may call.
    crate::search::register_functions(conn)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             checksum   TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let applied: Vec<(i64, String, String)> = {
        let mut stmt =
            conn.prepare("SELECT version, name, checksum FROM schema_migrations ORDER BY version")?;
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<_, _>>()?
    };

    let newest_known = migrations.last().map(|m| m.version).unwrap_or(0);
    for (version, name, checksum) in &applied {
        match migrations.iter().find(|m| m.version == *version) {
            None if *version > newest_known => {
                return Err(DbError::Migration(format!(
                    "the database has migration {version:04}_{name}, which this lanchat does not know: \
                     it was written by a newer version. Run that version, or restore a backup."
                )));
            }
            None => {
                return Err(DbError::Migration(format!(
                    "the database has migration {version:04}_{name}, which this lanchat does not ship"
                )));
            }
            Some(known) if known.checksum != *checksum => {
                return Err(DbError::Migration(format!(
                    "migration {version:04}_{name} was changed after it was applied to this \
                     database (checksum {checksum} in the database, {} in this binary). \
                     Applied migrations must never be edited; add a new one instead.",
                    known.checksum
                )));
            }
            Some(_) => {}
        }
    }

    let mut newly_applied = Vec::new();
    for migration in migrations {
        if applied.iter().any(|(v, _, _)| *v == migration.version) {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql).map_err(|err| {
            DbError::Migration(format!(
                "migration {:04}_{} failed: {err}",
                migration.version, migration.name
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![migration.version, migration.name, migration.checksum, now_ms()],
        )?;
        tx.commit()?;
        newly_applied.push(migration.clone());
    }
    Ok(newly_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        Connection::open_in_memory().expect("in-memory database")
    }

    #[test]
    fn applies_once_then_nothing_pending() {
        let mut conn = memory();
        let first = migrate(&mut conn).expect("migrate");
        assert!(!first.is_empty());
        assert!(migrate(&mut conn).expect("migrate again").is_empty());
    }

    #[test]
    fn refuses_edited_and_unknown_migrations() {
        let mut conn = memory();
        let mut migrations = embedded().expect("embedded");
        migrate_with(&mut conn, &migrations).expect("migrate");
        migrations[0].checksum = "0".repeat(64);
        let err = migrate_with(&mut conn, &migrations).expect_err("edited migration");
        assert!(err.to_string().contains("was changed"), "{err}");

        let older: Vec<Migration> = Vec::new();
        let err = migrate_with(&mut conn, &older).expect_err("newer database");
        assert!(err.to_string().contains("newer version"), "{err}");
    }
}
