//! Raw SQL that the connection may prepare once and reuse.
//!
//! The plain statements go through diesel's query builder over
//! `schema.rs`, which checks their columns at compile time and whose
//! statements diesel caches by itself. What the builder cannot say stays
//! SQL text, each beside a comment saying why: the guarded
//! single-statement writes (data-modifying CTEs: the record step, the
//! cleanup, the handoff, rack setup, the blueprint insert, and the
//! drained and quiesced marks, which carry their announcement), the
//! access facts' two subqueries, the announcements, and reads of system
//! catalogs. This file is for those.
//!
//! diesel's `sql_query` marks every statement unsafe to cache, because its
//! text could be built from anything; then each call costs a Parse and
//! Describe round trip before the Bind and Execute, and the server plans
//! the statement again. Baton's statements are constants, so they are safe
//! to cache: the connection keys its statement cache on the text and the
//! bind types, and the second call is one round trip.
//!
//! Adding a parameter's value without writing a placeholder (the text has
//! its own `$n`) needs `AstPass::push_bind_param_value_only`, which diesel
//! makes public only behind its "third-party backend" feature; that is why
//! the workspace enables it and pins diesel to 2.3.x. The builder's cache
//! does not make it unnecessary: the hottest statement, the record step,
//! is one of the guarded CTEs. If a diesel release moves it, this file is
//! the only one to change.

use std::borrow::Cow;
use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// A constant SQL statement, to which binds are added with
/// [`Statement::bind`].
#[derive(Clone, Debug)]
#[must_use = "a statement runs only when loaded or executed"]
pub struct Statement {
    sql: Cow<'static, str>,
}

/// A statement with its text fixed at compile time (or built once from
/// constants): safe to prepare and cache.
pub fn statement(sql: impl Into<Cow<'static, str>>) -> Statement {
    Statement { sql: sql.into() }
}

/// A statement with its parameters bound so far; the last is `value`.
#[derive(Clone, Debug)]
#[must_use = "a statement runs only when loaded or executed"]
pub struct Bound<Q, V, ST> {
    query: Q,
    value: V,
    sql_type: PhantomData<ST>,
}

/// Binding the next `$n` parameter, on a statement or a bound one.
pub trait Bind: Sized {
    /// Binds `value` as SQL type `ST`.
    fn bind<ST, V>(self, value: V) -> Bound<Self, V, ST> {
        Bound {
            query: self,
            value,
            sql_type: PhantomData,
        }
    }
}

impl Bind for Statement {}
impl<Q, V, ST> Bind for Bound<Q, V, ST> {}

impl QueryFragment<Pg> for Statement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(&self.sql);
        Ok(())
    }
}

impl<Q, V, ST> QueryFragment<Pg> for Bound<Q, V, ST>
where
    Q: QueryFragment<Pg>,
    V: ToSql<ST, Pg>,
    Pg: HasSqlType<ST>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        // The text already holds `$n`; only the value is added.
        out.push_bind_param_value_only::<ST, V>(&self.value)
    }
}

// No static id: the cache keys on the text and the bind types.
impl QueryId for Statement {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, V, ST> QueryId for Bound<Q, V, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement {
    type SqlType = Untyped;
}

impl<Q, V, ST> Query for Bound<Q, V, ST> {
    type SqlType = Untyped;
}

/// Runs `query` and returns its one row, reading the server's response to
/// the end.
///
/// diesel-async's `get_result` takes the first row and drops the rest of
/// the response. For a single statement, the implicit transaction commits
/// only at the end of that response, and a serialization failure there
/// arrives *after* the row. `get_result` would then report success for a
/// statement the server rolled back (the same problem as rust-postgres
/// issue 1334 and diesel_async issue 250). Baton's stress test saw it
/// happen: a blueprint reported stored that was not. `load` reads to the
/// end, so the failure comes back as an error and the retry wrapper
/// retries it. `clippy.toml` bans `get_result` and `first` in the
/// workspace for the same reason.
pub async fn load_one<'c, Q, U>(
    query: Q,
    conn: &'c mut diesel_async::AsyncPgConnection,
) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'c, diesel_async::AsyncPgConnection, U>
        + Send
        + 'c,
    U: Send + 'c,
{
    use diesel_async::RunQueryDsl;
    let rows: Vec<U> = query.load(conn).await?;
    rows.into_iter()
        .next()
        .ok_or(diesel::result::Error::NotFound)
}
