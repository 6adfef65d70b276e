//! The PostgreSQL implementation of [`Storage`] (cargo feature `postgres`): several front-end
//! processes on one database.
//!
//! - **A synchronous facade over `tokio-postgres`.** The [`Storage`] trait is synchronous and
//!   is called from blocking threads, from plain threads (tests, the CLI) and, for the
//!   cryptographic operations, from runtime worker threads (`Kms::handle`, see
//!   [`Storage::reads_block`]). The blocking `postgres` crate panics inside a Tokio runtime,
//!   so instead each [`PgStorage`] owns a small runtime of its own that drives the
//!   connections' sockets and timers, and a caller waits for its query on its own thread
//!   ([`block_on`]: park until woken). That works on any thread; nothing borrowed has to
//!   be `'static`.
//! - **Bounded waits.** Each operation (taking a pooled connection, opening one, and every
//!   statement of its transaction) runs under one client-side deadline (statement timeout
//!   plus connect timeout), on top of the server's `statement_timeout`; a connection whose
//!   operation timed out or failed at the transport level is dropped, never reused, so a
//!   restarted database is picked up by the next request. Running out of time is
//!   [`StorageError::Timeout`]; after the database did not answer at all, operations fail
//!   at once for one connect timeout (a quiet period) rather than each waiting again.
//! - **Invariants in the database.** Primary keys and UNIQUE indexes (key ids, alias names,
//!   tag keys, the external key of a custom key store; store ids, names, endpoint + path, VPC
//!   endpoint service names), foreign keys (tags and aliases to their key, a key to its
//!   custom key store: a store holding keys cannot be deleted), the key quota as a row of
//!   `key_counts` locked `FOR UPDATE` by the creator and kept by triggers, the custom key
//!   store quota under a transaction-scoped advisory lock per account and Region, and every
//!   conditional key write under the key's row lock (`SELECT … FOR UPDATE`), so concurrent
//!   processes can neither lose an update nor pass a quota together.
//! - **Retries.** A transaction that PostgreSQL aborts as a deadlock or serialization
//!   failure is retried whole, a few times.
//! - **Schema.** `schema` applies the versioned migrations at open under an advisory lock,
//!   so processes starting together migrate once.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement, Transaction};

use super::{
    AliasRecord, ConnectionState, CustomKeyStoreRecord, GrantRecord, KeyAddress, KeyMaterialRecord,
    KeyRecord, KeyState, KeyUsageRecord, MaterialChange, MultiRegionSet, Page, RotationRecord,
    ScheduledDeletion, Storage, StorageError,
};
use crate::config::{PostgresSettings, SecretSource};

mod aliases;
mod custom_key_stores;
mod grants;
mod key_materials;
mod key_usage;
mod keys;
mod leases;
mod multi_region;
mod schema;

#[cfg(test)]
pub(super) use schema::SCHEMA_VERSION;

/// How many times a transaction aborted by a deadlock or a serialization failure is retried.
const MAX_RETRIES: u32 = 5;

/// Why an attempt failed: a PostgreSQL error (maybe retryable) or a final answer.
#[derive(Debug)]
pub(super) enum Failure {
    Pg(tokio_postgres::Error),
    Storage(StorageError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

impl Failure {
    /// A deadlock or serialization failure: the whole transaction may be tried again.
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Pg(e) if matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ))
    }

    fn into_storage(self) -> StorageError {
        match self {
            Self::Storage(e) => e,
            Self::Pg(e) => backend(&e),
        }
    }
}

/// A PostgreSQL error as [`StorageError::Backend`]; the server's message is kept (it names
/// no secret: values are always bound parameters, never part of the SQL text).
pub(super) fn backend(e: &tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        // The server's `statement_timeout` (or a lock timeout) stopped the statement.
        Some(db)
            if *db.code() == SqlState::QUERY_CANCELED
                || *db.code() == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StorageError::Timeout(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        Some(db) => {
            StorageError::Backend(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StorageError::Backend(format!("postgres: {e}")),
    }
}

/// The SQLSTATE and constraint name of a constraint violation, if `e` is one.
pub(super) fn constraint(e: &tokio_postgres::Error) -> Option<(&SqlState, &str)> {
    let db = e.as_db_error()?;
    Some((db.code(), db.constraint()?))
}

/// Reads text column `idx` (named `column`) as an enum the catalogue defines.
pub(super) fn enum_column<T>(
    row: &Row,
    idx: usize,
    column: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, Failure> {
    let value: String = row.try_get(idx)?;
    parse(&value).ok_or_else(|| Failure::Storage(StorageError::UnknownValue { column, value }))
}

/// Limit + 1 (to learn whether another page follows), as an SQL integer.
pub(super) fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit.max(1).saturating_add(1)).unwrap_or(i64::MAX)
}

/// Bound parameters of one statement.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// One pooled connection and the statements prepared on it.
pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// The statement for `sql`, prepared once per connection (a query then costs one round
/// trip instead of two).
async fn cached(
    statements: &mut HashMap<&'static str, Statement>,
    client: &impl tokio_postgres::GenericClient,
    sql: &'static str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql).await?;
    statements.insert(sql, s.clone());
    Ok(s)
}

impl Conn {
    /// Rows of `sql` outside a transaction (one statement is one snapshot).
    pub(super) async fn query(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, Failure> {
        let stmt = cached(&mut self.statements, &self.client, sql).await?;
        Ok(self.client.query(&stmt, params).await?)
    }

    /// Runs `sql` outside a transaction (one statement is one transaction); the number of
    /// rows it changed.
    pub(super) async fn execute(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<u64, Failure> {
        let stmt = cached(&mut self.statements, &self.client, sql).await?;
        Ok(self.client.execute(&stmt, params).await?)
    }

    /// Starts a transaction (READ COMMITTED; writes take the row locks they need).
    pub(super) async fn tx(&mut self) -> Result<Tx<'_>, Failure> {
        let tx = self.client.transaction().await?;
        Ok(Tx {
            tx,
            statements: &mut self.statements,
        })
    }
}

/// A transaction on a pooled connection, with the connection's statement cache.
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    /// Rows of `sql`.
    pub(super) async fn query(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let stmt = cached(self.statements, &self.tx, sql).await?;
        self.tx.query(&stmt, params).await
    }

    /// The row of `sql`, if any.
    pub(super) async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let stmt = cached(self.statements, &self.tx, sql).await?;
        self.tx.query_opt(&stmt, params).await
    }

    /// Runs `sql`; the number of rows it changed.
    pub(super) async fn execute(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let stmt = cached(self.statements, &self.tx, sql).await?;
        self.tx.execute(&stmt, params).await
    }

    /// Runs `sql` (not cached: built at run time from trusted parts) in a savepoint, so a
    /// constraint violation it meets leaves the transaction usable; the number of rows it
    /// changed.
    pub(super) async fn execute_in_savepoint(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let sp = self.tx.savepoint("attempt").await?;
        match sp.execute(sql, params).await {
            Ok(n) => {
                sp.commit().await?;
                Ok(n)
            }
            Err(e) => {
                sp.rollback().await?;
                Err(e)
            }
        }
    }

    /// Runs a batch of statements (DDL).
    pub(super) async fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.tx.batch_execute(sql).await
    }

    /// Commits.
    pub(super) async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.tx.commit().await
    }
}

/// Wakes a thread parked in [`block_on`].
struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread, parking between polls. The futures given here
/// only exchange messages with connection tasks (and timers) that the storage's own runtime
/// drives, so this never needs a runtime on the calling thread, and works on any thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// How connections are opened: the parsed URL (password set), TLS, timeouts.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    statement_timeout: Duration,
}

impl Connector {
    fn new(settings: &PostgresSettings) -> Result<Self, StorageError> {
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e| StorageError::Backend(format!("postgres: storage.url: {e}")))?;
        if let Some(source) = &settings.password {
            let password = match source {
                SecretSource::File(path) => root_key::read_secret_file(path)
                    .map_err(|e| StorageError::Backend(format!("postgres password: {e}")))?,
                SecretSource::Env(var) => root_key::read_secret_env(var).ok_or_else(|| {
                    StorageError::Backend(format!(
                        "postgres password: environment variable {var} is not set"
                    ))
                })?,
            };
            config.password(password.as_bytes());
        }
        config.connect_timeout(settings.connect_timeout);
        config.application_name("kms-frontend");
        let tls = match &settings.tls_ca_file {
            None => None,
            Some(ca) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                    ca,
                )?))
            }
        };
        Ok(Self {
            config,
            tls,
            statement_timeout: settings.statement_timeout,
        })
    }

    /// Opens one connection (runs on the storage's runtime: sockets need its reactor) and
    /// leaves its driver task there.
    async fn connect(self) -> Result<Conn, tokio_postgres::Error> {
        let client = match self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls).await?;
                tokio::spawn(drive(connection));
                client
            }
        };
        // The server stops any statement (a lock wait included) after this.
        let ms = self.statement_timeout.as_millis();
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }
}

/// Drives one connection until it closes (its client is dropped, or the server went away).
async fn drive<F>(connection: F)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection closed");
    }
}

/// A rustls client config trusting only the CA certificates of `ca` (PEM); host names are
/// verified.
fn tls_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, StorageError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let fail = |e: String| StorageError::Backend(format!("postgres TLS {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The connection pool: up to `size` connections, idle ones reused, a closed one replaced.
struct Pool {
    size: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open or being opened (idle + leased).
    open: usize,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives back a leased connection: kept if `reuse` and still open, else its place freed.
    fn put_back(&self, conn: Conn, reuse: bool) {
        let mut state = self.lock();
        if reuse && !conn.client.is_closed() {
            state.idle.push(conn);
        } else {
            state.open = state.open.saturating_sub(1);
        }
        drop(state);
        self.freed.notify_one();
    }

    /// Frees the place of a connection that could not be opened.
    fn forget_one(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.freed.notify_one();
    }
}

/// The PostgreSQL storage: a pool of connections to one database, shareable by any number
/// of processes.
pub struct PgStorage {
    /// Drives the connections (sockets, timers); `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    connector: Connector,
    pool: Pool,
    /// The whole budget of one operation: waiting for a connection, opening it, and its
    /// statements.
    op_timeout: Duration,
    connect_timeout: Duration,
    url: String,
    /// Until when operations fail at once with [`StorageError::Timeout`]: set for one
    /// connect timeout after the database last did not answer at all (a connect or an
    /// operation ran out of time), so one request's later storage calls, and the requests
    /// arriving meanwhile, do not each wait the whole budget again on a hung server. A
    /// statement the server itself cancelled (`statement_timeout`) does not set it: that
    /// server is alive.
    quiet_until: Mutex<Option<Instant>>,
}

impl fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStorage")
            .field("url", &self.url)
            .field("pool_size", &self.pool.size)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        // A runtime may not be dropped (which waits) on a runtime thread; shutting it down
        // in the background may.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStorage {
    /// Connects to the database of `settings` and creates or migrates its schema. Fails
    /// with [`StorageError::Backend`] if the database cannot be reached within the connect
    /// timeout, the password cannot be read, or the schema is newer than this program's.
    pub fn open(settings: &PostgresSettings) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kms-postgres")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Backend(format!("postgres runtime: {e}")))?;
        let storage = Self {
            runtime: Some(runtime),
            connector: Connector::new(settings)?,
            pool: Pool {
                size: settings.pool_size.max(1),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                freed: Condvar::new(),
            },
            op_timeout: settings.statement_timeout + settings.connect_timeout,
            connect_timeout: settings.connect_timeout,
            url: settings.url.clone(),
            quiet_until: Mutex::new(None),
        };
        storage.run(async |conn| schema::init_schema(conn).await)?;
        Ok(storage)
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, StorageError> {
        self.runtime
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .ok_or_else(|| StorageError::Backend("postgres: storage is closed".into()))
    }

    /// A connection from the pool (opening one if there is room), waiting at most until
    /// `deadline`.
    fn lease(&self, deadline: Instant) -> Result<Conn, StorageError> {
        let mut state = self.pool.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                return Ok(conn);
            }
            if state.open < self.pool.size {
                state.open += 1;
                drop(state);
                return self
                    .connect(deadline)
                    .inspect_err(|_| self.pool.forget_one());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StorageError::Timeout(
                    "postgres: timed out waiting for a free connection".into(),
                ));
            }
            state = self
                .pool
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Opens a connection on the storage's runtime, waiting at most until `deadline`.
    fn connect(&self, deadline: Instant) -> Result<Conn, StorageError> {
        let handle = self.handle()?;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(self.connect_timeout);
        let connector = self.connector.clone();
        // The timer is made inside the task: it needs the runtime's context.
        let task =
            handle.spawn(async move { tokio::time::timeout(budget, connector.connect()).await });
        match block_on(task) {
            Ok(Ok(Ok(conn))) => Ok(conn),
            Ok(Ok(Err(e))) => Err(backend(&e)),
            Ok(Err(_)) => {
                self.went_quiet();
                Err(StorageError::Timeout(
                    "postgres: timed out connecting to the database".into(),
                ))
            }
            Err(e) => Err(StorageError::Backend(format!("postgres: connect: {e}"))),
        }
    }

    /// Fails at once while the database is in its quiet period (see
    /// [`PgStorage::quiet_until`]).
    fn check_quiet(&self) -> Result<(), StorageError> {
        let quiet = self
            .quiet_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *quiet {
            Some(until) if Instant::now() < until => Err(StorageError::Timeout(
                "postgres: the database did not answer just now; not asked again yet".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Starts a quiet period: the database did not answer in time.
    fn went_quiet(&self) {
        *self
            .quiet_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + self.connect_timeout);
    }

    /// Runs `op` on a pooled connection under the operation deadline, retrying it whole
    /// after a deadlock or serialization failure.
    pub(super) fn run<T>(
        &self,
        mut op: impl AsyncFnMut(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        let mut attempt = 0;
        loop {
            self.check_quiet()?;
            let deadline = Instant::now() + self.op_timeout;
            let mut conn = self.lease(deadline)?;
            // The timer belongs to the storage's runtime, which fires it; this thread only
            // waits for the outcome.
            let timed = {
                let _runtime = self.handle()?.enter();
                tokio::time::timeout_at(deadline.into(), op(&mut conn))
            };
            match block_on(timed) {
                Err(_) => {
                    // The statement may still be running: the connection is dropped (which
                    // ends it on the server), never reused.
                    self.pool.put_back(conn, false);
                    self.went_quiet();
                    return Err(StorageError::Timeout(
                        "postgres: the database did not answer in time".into(),
                    ));
                }
                Ok(Err(f)) if f.is_retryable() && attempt < MAX_RETRIES => {
                    attempt += 1;
                    self.pool.put_back(conn, true);
                }
                Ok(result) => {
                    // A failure at the transport level closes the client: put_back drops it.
                    self.pool.put_back(conn, true);
                    return result.map_err(Failure::into_storage);
                }
            }
        }
    }
}

impl Storage for PgStorage {
    fn reads_block(&self) -> bool {
        true
    }

    fn create_key(&self, key: &KeyRecord, max_keys: u64) -> Result<(), StorageError> {
        keys::create_key(self, key, max_keys)
    }

    fn get_key(
        &self,
        account_id: &str,
        region: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StorageError> {
        keys::get_key(self, account_id, region, key_id)
    }

    fn transition_key_state(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        to: KeyState,
        deletion: Option<ScheduledDeletion>,
    ) -> Result<(), StorageError> {
        keys::transition_key_state(self, key, from, to, deletion)
    }

    fn set_key_description(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        description: &str,
    ) -> Result<(), StorageError> {
        keys::set_key_column(self, key, from, keys::Column::Description, description)
    }

    fn set_key_policy(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        policy: &str,
    ) -> Result<(), StorageError> {
        keys::set_key_column(self, key, from, keys::Column::Policy, policy)
    }

    fn tag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tags: &[(String, String)],
        max_tags: usize,
    ) -> Result<(), StorageError> {
        keys::tag_key(self, key, from, tags, max_tags)
    }

    fn untag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tag_keys: &[String],
    ) -> Result<(), StorageError> {
        keys::untag_key(self, key, from, tag_keys)
    }

    fn delete_key_if_due(&self, key: KeyAddress<'_>, now_ms: i64) -> Result<(), StorageError> {
        keys::delete_key_if_due(self, key, now_ms)
    }

    fn list_keys(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StorageError> {
        keys::list_keys(self, account_id, region, marker, limit)
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StorageError> {
        aliases::create_alias(self, alias)
    }

    fn get_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<Option<AliasRecord>, StorageError> {
        aliases::get_alias(self, account_id, region, alias_name)
    }

    fn update_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
        target_key_id: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        aliases::update_alias(self, account_id, region, alias_name, target_key_id, now_ms)
    }

    fn delete_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<(), StorageError> {
        aliases::delete_alias(self, account_id, region, alias_name)
    }

    fn list_aliases(
        &self,
        account_id: &str,
        region: &str,
        key_id: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>, StorageError> {
        aliases::list_aliases(self, account_id, region, key_id, marker, limit)
    }

    fn keys_due_for_deletion(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        keys::keys_due_for_deletion(self, now_ms)
    }

    fn create_custom_key_store(
        &self,
        store: &CustomKeyStoreRecord,
        max_stores: u64,
    ) -> Result<(), StorageError> {
        custom_key_stores::create_custom_key_store(self, store, max_stores)
    }

    fn get_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::get_custom_key_store(self, account_id, region, id)
    }

    fn get_custom_key_store_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::get_custom_key_store_by_name(self, account_id, region, name)
    }

    fn update_custom_key_store(&self, store: &CustomKeyStoreRecord) -> Result<(), StorageError> {
        custom_key_stores::update_custom_key_store(self, store)
    }

    fn set_connection_state(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
        from: &[ConnectionState],
        state: ConnectionState,
        error_code: Option<&str>,
    ) -> Result<bool, StorageError> {
        custom_key_stores::set_connection_state(
            self, account_id, region, id, from, state, error_code,
        )
    }

    fn delete_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        custom_key_stores::delete_custom_key_store(self, account_id, region, id)
    }

    fn list_custom_key_stores(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::list_custom_key_stores(self, account_id, region, marker, limit)
    }

    fn connected_custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::connected_custom_key_stores(self)
    }

    fn count_keys_in_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<u64, StorageError> {
        custom_key_stores::count_keys_in_custom_key_store(self, account_id, region, id)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError> {
        leases::acquire_lease(self, name, holder, now_ms, ttl_ms)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StorageError> {
        leases::release_lease(self, name, holder)
    }

    fn create_grant(
        &self,
        grant: &GrantRecord,
        max_per_key: u64,
        max_per_grantee: u64,
    ) -> Result<GrantRecord, StorageError> {
        grants::create_grant(self, grant, max_per_key, max_per_grantee)
    }

    fn get_grant(
        &self,
        key: KeyAddress<'_>,
        grant_id: &str,
    ) -> Result<Option<GrantRecord>, StorageError> {
        grants::get_grant(self, key, grant_id)
    }

    fn grants_for_grantees(
        &self,
        key: KeyAddress<'_>,
        grantees: &[&str],
    ) -> Result<Vec<GrantRecord>, StorageError> {
        grants::grants_for_grantees(self, key, grantees)
    }

    fn list_grants(
        &self,
        key: KeyAddress<'_>,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError> {
        grants::list_grants(self, key, grant_id, grantee, marker, limit)
    }

    fn list_retirable_grants(
        &self,
        retiring_principal: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError> {
        grants::list_retirable_grants(self, retiring_principal, marker, limit)
    }

    fn delete_grant(&self, key: KeyAddress<'_>, grant_id: &str) -> Result<(), StorageError> {
        grants::delete_grant(self, key, grant_id)
    }

    fn key_materials(&self, key: KeyAddress<'_>) -> Result<Vec<KeyMaterialRecord>, StorageError> {
        key_materials::key_materials(self, key)
    }

    fn key_rotation(&self, key: KeyAddress<'_>) -> Result<Option<RotationRecord>, StorageError> {
        key_materials::key_rotation(self, key)
    }

    fn change_key_material(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        current: Option<&str>,
        change: &MaterialChange<'_>,
    ) -> Result<(), StorageError> {
        key_materials::change_key_material(self, key, from, current, change)
    }

    fn keys_due_for_rotation(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        key_materials::keys_due_for_rotation(self, now_ms)
    }

    fn materials_due_to_expire(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String, String)>, StorageError> {
        key_materials::materials_due_to_expire(self, now_ms)
    }

    fn record_key_usages(&self, usages: &[KeyUsageRecord]) -> Result<(), StorageError> {
        key_usage::record_key_usages(self, usages)
    }

    fn key_last_usage(&self, key: KeyAddress<'_>) -> Result<Option<KeyUsageRecord>, StorageError> {
        key_usage::key_last_usage(self, key)
    }

    fn usage_tracking_start_ms(&self) -> Result<i64, StorageError> {
        key_usage::usage_tracking_start_ms(self)
    }

    fn multi_region_set(
        &self,
        account_id: &str,
        key_id: &str,
    ) -> Result<Option<MultiRegionSet>, StorageError> {
        multi_region::multi_region_set(self, account_id, key_id)
    }

    fn create_replica_key(
        &self,
        replica: &KeyRecord,
        materials: &[KeyMaterialRecord],
        primary_region: &str,
        primary_from: &[KeyState],
        max_keys: u64,
    ) -> Result<(), StorageError> {
        multi_region::create_replica_key(
            self,
            replica,
            materials,
            primary_region,
            primary_from,
            max_keys,
        )
    }

    fn update_primary_region(
        &self,
        account_id: &str,
        key_id: &str,
        from_region: &str,
        to_region: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        multi_region::update_primary_region(
            self,
            account_id,
            key_id,
            from_region,
            to_region,
            now_ms,
        )
    }

    fn multi_region_transitions_due(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(String, String, String, KeyState)>, StorageError> {
        multi_region::multi_region_transitions_due(self, before_ms)
    }
}

/// Applies the migrations up to `version` only (tests build older databases with it).
#[cfg(test)]
pub(super) fn migrate_for_tests(settings: &PostgresSettings, version: i64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let connector = Connector::new(settings).unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let mut conn = connector
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        schema::migrate_to(&mut conn, version)
            .await
            .unwrap_or_else(|e| panic!("migrate: {e:?}"));
    });
}

/// The first column of the first row of `sql` as text, on the test database.
#[cfg(test)]
pub(super) fn query_text_for_tests(sql: &str) -> String {
    let url = super::tests::backends::pg::base_url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        let row = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get::<_, Option<String>>(0)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_default()
    })
}
