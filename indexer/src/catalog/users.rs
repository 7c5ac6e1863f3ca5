//! Users, their API tokens, and the audit log.

use async_trait::async_trait;
use serde::Serialize;

use super::{AuditEntry, CatalogError, Role, SqlCatalog, User};

/// An API token as lists show it: never its secret, nor the hash it is stored as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    /// Its id (what a revoke names).
    pub id: i64,
    /// The user it acts as.
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// Its name, for people ("restore on db7", "API login from 10.0.0.5").
    pub name: String,
    /// When it was made (ms).
    pub created_ms: i64,
    /// When it stops working (ms).
    pub expires_ms: i64,
    /// When it was last used (ms, to [`LAST_USED_GRAIN_MS`]; 0: never).
    pub last_used_ms: i64,
}

/// A token's last use is written at most this often (ms): a read per API request, a write
/// at most once a minute per token.
pub const LAST_USED_GRAIN_MS: i64 = 60_000;

/// Most tokens a list returns (newest first).
pub const MAX_TOKENS_LISTED: i64 = 1000;

/// What [`UserCatalog::delete_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRemoval {
    /// The user and its tokens are gone.
    Removed,
    /// No user has that name.
    NotFound,
    /// Refused: it is the only admin (nobody could manage users after it).
    LastAdmin,
}

/// Users, tokens and the audit log.
#[async_trait]
pub trait UserCatalog: Send + Sync {
    /// Adds a user (or replaces its role and password; a change of either removes the
    /// user's tokens).
    async fn put_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<i64, CatalogError>;
    /// Changes a user's role and nothing else (not its password, not its focus businesses);
    /// a change removes the user's tokens, as [`Self::put_user`] does. Whether it exists.
    async fn set_role(&self, user_id: i64, role: Role) -> Result<bool, CatalogError>;
    /// Removes a user and its tokens, unless it is the only admin.
    async fn delete_user(&self, name: &str) -> Result<UserRemoval, CatalogError>;
    /// A user by name.
    async fn user(&self, name: &str) -> Result<Option<User>, CatalogError>;
    /// Stores a token hash for a user, valid until `expires_ms`, named "unnamed".
    async fn add_token(
        &self,
        user_id: i64,
        token_hash: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), CatalogError> {
        self.add_named_token(user_id, "unnamed", token_hash, now_ms, expires_ms)
            .await
            .map(|_| ())
    }
    /// Stores a named token hash for a user, valid until `expires_ms`; its id. The user's
    /// tokens that expired by `now_ms` are removed in the same transaction, so lists stay
    /// short however often a script logs in.
    async fn add_named_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<i64, CatalogError>;
    /// The live tokens of one user (or of every user), newest first, at most
    /// [`MAX_TOKENS_LISTED`].
    async fn tokens(
        &self,
        user_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Vec<ApiToken>, CatalogError>;
    /// Removes one token, if it exists and (when `owner` is given) belongs to that user; the
    /// token it removed. Requests with it are refused from then on (nothing caches tokens).
    async fn revoke_token(
        &self,
        id: i64,
        owner: Option<i64>,
    ) -> Result<Option<ApiToken>, CatalogError>;
    /// The user a token hash belongs to, if the token has not expired at `now_ms`; records
    /// the use (to [`LAST_USED_GRAIN_MS`]).
    async fn user_by_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<User>, CatalogError>;
    /// Sets a user's focus businesses (UBackup's `focus_business`, a JSON list).
    async fn set_focus(&self, user_id: i64, focus_json: &str) -> Result<(), CatalogError>;
    /// Every user with its number of API tokens, by name.
    async fn users(&self) -> Result<Vec<(User, i64)>, CatalogError>;
    /// Removes every API token of a user; how many.
    async fn revoke_tokens(&self, user_id: i64) -> Result<u64, CatalogError>;
    /// Appends to the audit log.
    async fn audit(
        &self,
        at_ms: i64,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), CatalogError>;
    /// The newest audit entries.
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, CatalogError>;
}

/// A row of [`UserCatalog::user_by_token`].
#[derive(sqlx::FromRow)]
struct TokenUser {
    #[sqlx(flatten)]
    user: User,
    token_id: i64,
    last_used_ms: i64,
}

/// A row of [`UserCatalog::revoke_token`]'s look-up.
#[derive(sqlx::FromRow)]
struct OwnedToken {
    #[sqlx(flatten)]
    token: ApiToken,
    user_id: i64,
}

const TOKEN_COLUMNS: &str =
    "t.id, u.name AS user_name, t.name, t.created_ms, t.expires_ms, t.last_used_ms";

/// A row of [`UserCatalog::users`].
#[derive(sqlx::FromRow)]
struct UserTokens {
    #[sqlx(flatten)]
    user: User,
    tokens: i64,
}

#[async_trait]
impl UserCatalog for SqlCatalog {
    async fn put_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<i64, CatalogError> {
        // A new password or role ends the user's tokens (sessions check the same row).
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE name = $1 \
             AND (role <> $2 OR password_hash <> $3))",
        )
        .bind(name.to_string())
        .bind(role.name())
        .bind(password_hash.to_string())
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, role, password_hash, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
             password_hash = excluded.password_hash RETURNING id",
        )
        .bind(name.to_string())
        .bind(role.name())
        .bind(password_hash.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn set_role(&self, user_id: i64, role: Role) -> Result<bool, CatalogError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE id = $1 \
             AND role <> $2)",
        )
        .bind(user_id)
        .bind(role.name())
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.name())
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn delete_user(&self, name: &str) -> Result<UserRemoval, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let Some(u) = sqlx::query_as::<_, User>(
            "SELECT id, name, role, password_hash, focus_business FROM users WHERE name = $1",
        )
        .bind(name.to_string())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(UserRemoval::NotFound);
        };
        sqlx::query("DELETE FROM tokens WHERE user_id = $1")
            .bind(u.id)
            .execute(&mut *tx)
            .await?;
        // One statement decides, so the last admin is never removed by this call whatever
        // its role was when it was read above.
        let n = sqlx::query(
            "DELETE FROM users WHERE id = $1 AND (role <> $2 OR \
             (SELECT COUNT(*) FROM users WHERE role = $2) > 1)",
        )
        .bind(u.id)
        .bind(Role::Admin.name())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            // Its tokens stay too.
            tx.rollback().await?;
            return Ok(UserRemoval::LastAdmin);
        }
        tx.commit().await?;
        Ok(UserRemoval::Removed)
    }

    async fn user(&self, name: &str) -> Result<Option<User>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT id, name, role, password_hash, focus_business FROM users WHERE name = $1",
        )
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn add_named_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<i64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND expires_ms <= $2")
            .bind(user_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (user_id, name, token_hash, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(name.to_string())
        .bind(token_hash.to_string())
        .bind(now_ms)
        .bind(expires_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn tokens(
        &self,
        user_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Vec<ApiToken>, CatalogError> {
        let rows = match user_id {
            Some(id) => {
                sqlx::query_as(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id \
                     WHERE t.expires_ms > $1 AND t.user_id = $2 ORDER BY t.id DESC LIMIT $3"
                ))
                .bind(now_ms)
                .bind(id)
                .bind(MAX_TOKENS_LISTED)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id \
                     WHERE t.expires_ms > $1 ORDER BY u.name, t.id DESC LIMIT $2"
                ))
                .bind(now_ms)
                .bind(MAX_TOKENS_LISTED)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    async fn revoke_token(
        &self,
        id: i64,
        owner: Option<i64>,
    ) -> Result<Option<ApiToken>, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let found: Option<OwnedToken> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS}, t.user_id FROM tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        if owner.is_some_and(|o| o != found.user_id) {
            return Ok(None);
        }
        sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(found.token))
    }

    async fn user_by_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<User>, CatalogError> {
        let row: Option<TokenUser> = sqlx::query_as(
            "SELECT u.id, u.name, u.role, u.password_hash, u.focus_business, \
             t.id AS token_id, t.last_used_ms FROM tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.expires_ms > $2",
        )
        .bind(token_hash.to_string())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // A read per request; a write only when the recorded use is a minute old. The write
        // is a courtesy to the token list: a busy catalog does not fail the request for it.
        if now_ms.saturating_sub(row.last_used_ms) >= LAST_USED_GRAIN_MS {
            if let Err(e) = sqlx::query(
                "UPDATE tokens SET last_used_ms = $1 WHERE id = $2 AND last_used_ms < $1",
            )
            .bind(now_ms)
            .bind(row.token_id)
            .execute(&self.pool)
            .await
            {
                tracing::debug!("token {}: last use not recorded: {e}", row.token_id);
            }
        }
        Ok(Some(row.user))
    }

    async fn set_focus(&self, user_id: i64, focus_json: &str) -> Result<(), CatalogError> {
        sqlx::query("UPDATE users SET focus_business = $1 WHERE id = $2")
            .bind(focus_json.to_string())
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit(
        &self,
        at_ms: i64,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, user_name, action, detail) VALUES ($1,$2,$3,$4)",
        )
        .bind(at_ms)
        .bind(user.to_string())
        .bind(action.to_string())
        .bind(detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT at_ms, user_name, action, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn users(&self) -> Result<Vec<(User, i64)>, CatalogError> {
        let rows: Vec<UserTokens> = sqlx::query_as(
            "SELECT u.id, u.name, u.role, u.password_hash, u.focus_business, \
             (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id) AS tokens \
             FROM users u ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.user, r.tokens)).collect())
    }

    async fn revoke_tokens(&self, user_id: i64) -> Result<u64, CatalogError> {
        Ok(sqlx::query("DELETE FROM tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
