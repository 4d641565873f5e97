//! What can go wrong in the store, typed so that callers branch on the kind (a
//! `Conflict` is a 409 for the console, a `NotFound` a 404, an `Invalid` message is
//! skipped by intake, the rest are the store's own failures).

/// A failure of the data layer. Every message names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or opened (the URL is shown without its password).
    #[error("cannot open the console store at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Applying or checking the schema migrations failed.
    #[error("console store migration failed: {0}")]
    Migrate(String),
    /// The store was migrated by a newer build than this one: refusing to touch it.
    #[error(
        "the console store is at schema version {found}, newer than the {known} this build knows: \
         run a vigil at least as new as the one that migrated it"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// A statement failed; `what` names the operation and the table.
    #[error("console store: {what} failed: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The named thing (`incident X`, `user Y`, ...) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The action does not fit the current state, or someone else holds the incident;
    /// the message says who or why.
    #[error("{0}")]
    Conflict(String),
    /// The input can never be stored (an empty note, a malformed hash, an unknown outcome).
    #[error("invalid {0}")]
    Invalid(String),
    /// There is no store where one was expected (a command that reads a store, such as
    /// `audit verify`, never creates one).
    #[error("{0}")]
    Missing(String),
    /// A stored row cannot be read back (for example stored JSON that no longer parses).
    #[error("console store row unreadable: {0}")]
    Corrupt(String),
}

/// Maps a sqlx error to [`StoreError::Query`] naming the operation:
/// `.await.map_err(query("incidents: insert"))?`.
pub(crate) fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if userinfo.contains(':') { format!("{scheme}://{user}:***@{host}{tail}") } else { url.to_string() }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact_url("postgres://vigil:s3cr@t@db:5432/console"), "postgres://vigil:***@db:5432/console");
        assert_eq!(redact_url("postgres://vigil@db/console"), "postgres://vigil@db/console");
        assert_eq!(redact_url("sqlite:///var/lib/vigil/console.db"), "sqlite:///var/lib/vigil/console.db");
    }
}
