//! Console accounts and sessions. Passwords arrive hashed (argon2id, by the caller) and
//! sessions are found by the hash of their token: the store never sees either secret.

use super::error::{StoreError, query};
use super::{RowExt, Session, Store, User};
use crate::model::{Role, UnixMs};
use sqlx::any::AnyRow;

fn role_of(name: &str, role: &str) -> Result<Role, StoreError> {
    Role::parse(role).ok_or_else(|| StoreError::Corrupt(format!("user {name}: role {role:?}")))
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let name = row.text("name")?;
    Ok(User {
        role: role_of(&name, &row.text("role")?)?,
        password_hash: row.opt_text("password_hash")?,
        disabled: row.int("disabled")? != 0,
        name,
    })
}

impl Store {
    /// Creates the user or updates their role; `password_hash: None` keeps the old hash
    /// (a new user without one cannot log in with a password). Setting a password ends
    /// every session of the user, in the same transaction: whoever held the old one is out.
    pub async fn upsert_user(&self, name: &str, password_hash: Option<&str>, role: Role) -> Result<(), StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("user: empty name".into()));
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (name, password_hash, role, disabled) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
             password_hash = COALESCE(excluded.password_hash, users.password_hash)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await
        .map_err(query("users: upsert"))?;
        if password_hash.is_some() {
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(query("sessions: delete on a password change"))?;
        }
        tx.commit().await.map_err(query("users: commit"))?;
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        sqlx::query("SELECT name, password_hash, role, disabled FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("users: read"))?
            .map(|r| user_from_row(&r))
            .transpose()
    }

    /// Every account, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        sqlx::query("SELECT name, password_hash, role, disabled FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(query("users: list"))?
            .iter()
            .map(user_from_row)
            .collect()
    }

    /// Disables (and logs out) or re-enables an account.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE name = $2")
            .bind(i64::from(disabled))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(query("users: set disabled"))?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(query("sessions: delete a disabled user's"))?;
        }
        tx.commit().await.map_err(query("users: commit"))?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf_token: &str,
        now_ms: UnixMs,
        expires_ms: UnixMs,
    ) -> Result<(), StoreError> {
        if self.user(user).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {user}")));
        }
        let fresh = sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, csrf_token, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(token_hash)
        .bind(user)
        .bind(csrf_token)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(&self.pool)
        .await
        .map_err(query("sessions: create"))?
        .rows_affected();
        if fresh == 0 {
            return Err(StoreError::Conflict("a session with this token already exists".into()));
        }
        Ok(())
    }

    /// The live session with this token hash: `None` once expired or when its user is
    /// disabled or gone.
    pub async fn session(&self, token_hash: &str, now_ms: UnixMs) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.user_name, u.role, u.local_time, s.csrf_token, s.expires_ms FROM sessions s \
             JOIN users u ON u.name = s.user_name \
             WHERE s.token_hash = $1 AND s.expires_ms > $2 AND u.disabled = 0",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("sessions: read"))?;
        row.map(|r| {
            let user = r.text("user_name")?;
            Ok(Session {
                role: role_of(&user, &r.text("role")?)?,
                csrf_token: r.text("csrf_token")?,
                expires_ms: r.int("expires_ms")?,
                local_time: r.int("local_time")? != 0,
                user,
            })
        })
        .transpose()
    }

    /// The account's choice of local time (or UTC) for the times its pages show.
    pub async fn set_local_time(&self, name: &str, local: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET local_time = $1 WHERE name = $2")
            .bind(i64::from(local))
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(query("users: set the time zone"))?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        Ok(())
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(query("sessions: delete"))?;
        Ok(())
    }

    /// Removes expired sessions; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: UnixMs) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map_err(query("sessions: delete expired"))?
            .rows_affected())
    }
}
