//! A pooled connection that is never handed back half-used, and pipelines.
//!
//! An operation can stop anywhere: the deadline drops its future while a
//! statement is on the wire or a transaction is open. Such a connection must
//! not serve the next caller (it would read someone else's answers, or run
//! inside someone else's transaction), so [`Conn`] remembers whether it is
//! clean and, when dropped dirty, takes the connection out of the pool and
//! closes it; PostgreSQL then rolls the transaction back — unless the
//! statements already sent include the `COMMIT` and it reaches them before it
//! sees the socket close (a first-use transaction is sent whole): such a
//! transaction may still commit, and the client's retry then finds its trial.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::{ClientWrapper, Object, Pool, PoolError};
use futures_util::future::maybe_done;
use temppass_store::StoreError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::to_store_error;

/// One statement parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// A connection checked out of the pool for one store operation.
pub(crate) struct Conn {
    /// Always `Some` until `drop`.
    object: Option<Object>,
    /// A request is on the wire and its answer not read yet.
    in_flight: bool,
    /// A transaction is open (`BEGIN` sent, no `COMMIT`/`ROLLBACK` answered yet).
    in_transaction: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let dirty = self.in_flight || self.in_transaction;
        // A clean object simply drops here, which hands it back to the pool.
        if let Some(object) = self.object.take().filter(|_| dirty) {
            // Out of the pool and closed: its task ends, PostgreSQL sees the
            // socket close and rolls back whatever was open.
            drop(Object::take(object));
        }
    }
}

pub(crate) async fn get(pool: &Pool, target: &str) -> Result<Conn, StoreError> {
    match pool.get().await {
        Ok(object) => Ok(Conn { object: Some(object), in_flight: false, in_transaction: false }),
        Err(PoolError::Timeout(_)) => {
            Err(StoreError::Unavailable(format!("no connection to PostgreSQL at {target} within the timeout")))
        }
        Err(PoolError::Backend(error)) => Err(match to_store_error(error) {
            StoreError::Unavailable(message) => {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {message}"))
            }
            other => other,
        }),
        Err(PoolError::Closed) => Err(StoreError::Unavailable("the connection pool is closed".into())),
        Err(other) => Err(StoreError::Internal(format!("connection pool: {other}"))),
    }
}

impl Conn {
    fn wrapper(&self) -> &ClientWrapper {
        match &self.object {
            Some(object) => object,
            None => unreachable!("the connection is only taken when dropped"),
        }
    }

    /// The statement for `sql`, prepared once per connection.
    pub(crate) async fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        self.in_flight = true;
        let statement = self.wrapper().prepare_cached(sql).await;
        // Answered, with a statement or an error: nothing is left on the wire.
        self.in_flight = false;
        statement.map_err(to_store_error)
    }

    /// Runs one statement outside a transaction.
    pub(crate) async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepare(sql).await?;
        let mut answers = self.pipeline(&[(&statement, params)]).await.map_err(to_store_error)?;
        Ok(answers.pop().unwrap_or_default())
    }

    /// Sends every statement before reading any answer, so the batch costs one
    /// network round trip. PostgreSQL runs them one after another in this
    /// order, each with a snapshot taken when it starts (READ COMMITTED), so a
    /// statement sees what the ones before it did and what others committed
    /// while it waited. Returns the rows of each, or the first error in order
    /// (statements after a failed one inside a transaction fail too).
    pub(crate) async fn pipeline(
        &mut self,
        statements: &[(&Statement, &[Param<'_>])],
    ) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
        self.in_flight = true;
        let client = self.wrapper();
        let mut answers: Vec<_> = statements
            .iter()
            .map(|(statement, params)| maybe_done(Box::pin(client.query(*statement, params))))
            .collect();
        // tokio-postgres writes a request to the connection when its future is
        // first polled: poll each once, in order, before waiting for any.
        poll_fn(|cx| {
            for answer in &mut answers {
                let _ = Pin::new(answer).poll(cx);
            }
            Poll::Ready(())
        })
        .await;
        for answer in &mut answers {
            answer.await;
        }
        let results: Vec<_> = answers.iter_mut().map(|answer| Pin::new(answer).take_output()).collect();
        drop(answers);
        self.in_flight = false;
        let mut rows = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Some(Ok(answer)) => rows.push(answer),
                Some(Err(error)) => return Err(error),
                None => unreachable!("every pipelined statement was awaited"),
            }
        }
        Ok(rows)
    }

    /// Marks that the next pipeline opens a transaction (it starts with `BEGIN`).
    pub(crate) fn transaction_opening(&mut self) {
        self.in_transaction = true;
    }

    /// Marks that `COMMIT` or `ROLLBACK` was answered.
    pub(crate) fn transaction_closed(&mut self) {
        self.in_transaction = false;
    }

    /// Ends the open transaction, if any, keeping the connection for a retry.
    pub(crate) async fn rollback(&mut self) -> Result<(), StoreError> {
        self.in_flight = true;
        // Outside a transaction (a pipelined COMMIT already ended an aborted
        // one) PostgreSQL answers ROLLBACK with a warning, not an error.
        let result = self.wrapper().batch_execute("ROLLBACK").await;
        self.in_flight = false;
        result.map_err(to_store_error)?;
        self.in_transaction = false;
        Ok(())
    }

    /// Runs SQL text (several statements allowed) with the simple query protocol: migrations only.
    pub(crate) async fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        self.in_flight = true;
        let result = self.wrapper().batch_execute(sql).await;
        self.in_flight = false;
        result.map_err(to_store_error)
    }
}

/// Every write transaction: short, and `READ COMMITTED` (each statement sees
/// what committed before it started; the locks of `locks.rs` do the rest).
pub(crate) const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
pub(crate) const COMMIT: &str = "COMMIT";
