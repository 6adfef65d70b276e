//! The backends the storage conformance tests run on, and `conformance!`, which turns a
//! list of test functions into one `#[test]` per backend.
//!
//! PostgreSQL (cargo feature `postgres`): the database named by `KMS_TEST_POSTGRES_URL`
//! (`postgres://user:password@host:port/db`; the role needs `CREATE` on the database). Each
//! test gets a schema of its own (`search_path`), dropped afterwards, so tests run in
//! parallel on one database. With the feature on, a missing URL fails the test (it never
//! skips): `scripts/test` starts PostgreSQL and sets it, or leaves the feature off and says
//! so.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;

use super::super::{SqliteStorage, Storage, StorageError};

/// The backend a conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::storage) enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

thread_local! {
    /// The backend of the test running on this thread (set by `conformance!`).
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// Runs `test` with `db()` giving databases of `backend`.
pub(in crate::storage) fn with_backend(backend: Backend, test: fn()) {
    BACKEND.with(|b| b.set(backend));
    test();
}

/// One fresh database; clones open more instances on the same database.
#[derive(Debug, Clone)]
pub(in crate::storage) enum TestDb {
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(crate::config::PostgresSettings),
}

impl TestDb {
    /// A new storage instance on this database.
    pub(in crate::storage) fn open_storage(&self) -> Result<Box<dyn Storage>, StorageError> {
        match self {
            Self::Sqlite(path) => Ok(Box::new(SqliteStorage::open(path)?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(settings) => Ok(Box::new(super::super::PgStorage::open(settings)?)),
        }
    }
}

/// Keeps a test database alive; dropping it removes the database.
#[derive(Debug)]
pub(in crate::storage) enum Guard {
    Sqlite {
        _dir: Arc<tempfile::TempDir>,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        _schema: pg::Schema,
    },
}

/// A fresh database of the current test's backend.
pub(in crate::storage) fn fresh() -> (Guard, TestDb) {
    match BACKEND.with(Cell::get) {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
            let path = dir.path().join("kms.sqlite3");
            (
                Guard::Sqlite {
                    _dir: Arc::new(dir),
                },
                TestDb::Sqlite(path),
            )
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let schema = pg::Schema::create();
            let settings = schema.settings();
            (
                Guard::Postgres { _schema: schema },
                TestDb::Postgres(settings),
            )
        }
    }
}

#[cfg(feature = "postgres")]
pub(in crate::storage) mod pg {
    //! Schemas of their own on the test database.

    use std::time::Duration;

    use crate::config::PostgresSettings;

    /// The variable naming the test database.
    pub(in crate::storage) const URL_VAR: &str = "KMS_TEST_POSTGRES_URL";

    /// The test database's URL; panics (never skips) when it is not set.
    pub(in crate::storage) fn base_url() -> String {
        std::env::var(URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{URL_VAR} is not set: the PostgreSQL conformance tests need a database \
                 (scripts/test starts PostgreSQL 15 and sets it; or build without the \
                 `postgres` feature)"
            )
        })
    }

    /// Runs `sql` on the test database (administration outside the storage under test).
    pub(in crate::storage) fn admin(sql: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
            let driver = tokio::spawn(connection);
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            drop(client);
            let _ = driver.await;
        });
    }

    /// A schema of one test: created empty, dropped with everything in it at the end.
    #[derive(Debug)]
    pub(in crate::storage) struct Schema {
        pub(in crate::storage) name: String,
    }

    impl Schema {
        pub(in crate::storage) fn create() -> Self {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            admin(&format!("CREATE SCHEMA {name}"));
            Self { name }
        }

        /// Storage settings whose connections see only this schema.
        pub(in crate::storage) fn settings(&self) -> PostgresSettings {
            let base = base_url();
            let sep = if base.contains('?') { '&' } else { '?' };
            PostgresSettings {
                url: format!("{base}{sep}options=-c%20search_path%3D{}", self.name),
                password: None,
                tls_ca_file: None,
                pool_size: 8,
                statement_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
            }
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            admin(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// `conformance!(a, b, …)`: for each test function `a` (a plain `fn a()` in the calling
/// module that gets its databases from `db()`), `on_sqlite::a` and, with the `postgres`
/// feature, `on_postgres::a`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::backends::with_backend(super::backends::Backend::Sqlite, super::$name);
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    super::backends::with_backend(
                        super::backends::Backend::Postgres,
                        super::$name,
                    );
                }
            )*
        }
    };
}
pub(in crate::storage) use conformance;
