//! Test harness for the console: the same test body against both store backends, a
//! SQLite file in a temp dir and a database on a real PostgreSQL server
//! ([`postgres::PgServer`]).
#![allow(dead_code)]

pub mod postgres;

use std::sync::Arc;
use vigil_console::store::{AuditKey, Store};

/// The audit key the tests' stores are opened with.
pub fn key() -> AuditKey {
    AuditKey::new(b"the audit key of the console tests, 32+ bytes").unwrap()
}

/// One empty database on one backend. Open as many [`Store`]s on it as a test needs.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<Arc<postgres::PgServer>>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/console.db", dir.path().display());
        TestDb { url, backend: "sqlite", _dir: Some(dir), _pg: None }
    }

    pub fn postgres() -> TestDb {
        let pg = postgres::PgServer::shared();
        let url = pg.create_database();
        TestDb { url, backend: "postgres", _dir: None, _pg: Some(pg) }
    }

    pub async fn open(&self) -> Store {
        let store = Store::open(&self.url, key()).await.unwrap_or_else(|e| panic!("open {}: {e}", self.backend));
        assert_eq!(store.backend(), self.backend);
        store
    }

    /// A plain connection pool on the same database, past every rule of the store: for
    /// tampering with rows the way an intruder with database access would.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&self.url).await.unwrap()
    }
}

/// Runs one async test body against both backends: `both!(name)` defines
/// `name::sqlite` and `name::postgres`, each calling `name(&TestDb)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(&$crate::common::TestDb::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(&$crate::common::TestDb::postgres()).await
            }
        }
    )*};
}
