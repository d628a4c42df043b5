//! Which store a collector or a command opens: the embedded SQLite file in the data
//! directory (the default), or PostgreSQL when `database_url` is set.

use std::path::Path;
use std::sync::Arc;

use super::pg::{DatabaseUrl, PgStore};
use super::sqlite::SqliteStore;
use super::{Store, StoreError, StoreOptions};

/// An open store, of either engine.
#[derive(Clone)]
pub enum OpenStore {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl OpenStore {
    /// Opens the store a configuration names: PostgreSQL at `database_url`, else the
    /// SQLite file in `data_dir`.
    pub async fn open(
        data_dir: &Path,
        database_url: Option<&DatabaseUrl>,
        options: &StoreOptions,
    ) -> Result<OpenStore, StoreError> {
        Ok(match database_url {
            Some(url) => OpenStore::Postgres(Arc::new(PgStore::open(url.secret(), options).await?)),
            None => OpenStore::Sqlite(Arc::new(SqliteStore::open_with(data_dir, options).await?)),
        })
    }

    /// For a command (token, report, import): no integrity check of a SQLite file, its
    /// ingest log left to the collector, the rollups' time zone kept as stored.
    pub async fn open_for_command(
        data_dir: &Path,
        database_url: Option<&DatabaseUrl>,
    ) -> Result<OpenStore, StoreError> {
        OpenStore::open(
            data_dir,
            database_url,
            &StoreOptions {
                integrity_check: false,
                ingest_log: false,
                ..StoreOptions::default()
            },
        )
        .await
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            OpenStore::Sqlite(s) => s.clone(),
            OpenStore::Postgres(s) => s.clone(),
        }
    }

    /// Where the store is, for logs and messages (never a password).
    pub fn describe(&self) -> String {
        match self {
            OpenStore::Sqlite(s) => s.path().display().to_string(),
            OpenStore::Postgres(_) => "PostgreSQL".to_string(),
        }
    }

    /// Compacts the hourly rows of the local days before `before_s`.
    pub async fn compact_hourly(&self, before_s: i64) -> Result<u64, StoreError> {
        match self {
            OpenStore::Sqlite(s) => s.compact_hourly(before_s).await,
            OpenStore::Postgres(s) => s.compact_hourly(before_s).await,
        }
    }

    pub async fn close(&self) {
        match self {
            OpenStore::Sqlite(s) => s.close().await,
            OpenStore::Postgres(s) => s.close().await,
        }
    }
}
