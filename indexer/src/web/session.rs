//! Sessions and the extractors that pages take.
//!
//! A session is 32 random bytes (hex in the cookie); the server keeps only its SHA-256, the
//! user's name, its CSRF token and when it was last used. The user row (role included) is read
//! from the catalog on every request, so a role change or removal takes effect at once, and
//! a session made before the user's last password or role change is refused.
//! Sessions live in the indexer's memory: a restart logs everyone out, which is the safe side.
//!
//! Pages take [`PageViewer`], [`PageOperator`] or [`PageAdmin`]; without a session they
//! redirect to the login page, with too low a role they answer 403. The server decides; hiding
//! a button is only a courtesy.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::Extension;

use super::errors::PageError;
use super::{cookies, return_to, WebOptions, WebState};
use crate::catalog::{CatalogError, Role, User};
use crate::http::AppState;

#[derive(Debug, Clone)]
struct Entry {
    user: String,
    csrf: String,
    last_ms: i64,
    /// [`credentials_stamp`] of the user at login.
    stamp: String,
}

/// Sessions (the login limiter is [`crate::auth::LoginGuard`]'s, shared with the API).
#[derive(Debug)]
pub struct Sessions {
    idle_ms: i64,
    by_hash: Mutex<HashMap<String, Entry>>,
}

/// What a session remembers of its user's credentials: a new password (any reset: the salt
/// is new) or another role makes every older session of the user invalid, wherever the
/// change came from (users page, `user add`, another indexer on the same catalog).
pub fn credentials_stamp(u: &User) -> String {
    crate::auth::token_hash(&format!("{}\0{}", u.role.name(), u.password_hash))
}

/// A logged-in request: the user as the catalog has it now, and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
}

fn random_hex() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Wall-clock milliseconds: sessions and login limits run on real time, not on the
/// catalog's (movable) clock.
pub fn wall_ms() -> i64 {
    use crate::clock::Clock as _;
    crate::clock::SystemClock.now_ms()
}

fn hash(id: &str) -> String {
    crate::auth::token_hash(id)
}

impl Sessions {
    /// Empty.
    pub fn new(o: &WebOptions) -> Sessions {
        Sessions {
            idle_ms: o.session_idle_ms,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `user`: its id (for the cookie).
    pub fn create(&self, user: &User, now_ms: i64) -> String {
        let id = random_hex();
        if let Ok(mut m) = self.by_hash.lock() {
            // Drop idle ones while here; bounded by the number of live sessions.
            let idle = self.idle_ms;
            m.retain(|_, e| now_ms - e.last_ms < idle);
            m.insert(
                hash(&id),
                Entry {
                    user: user.name.clone(),
                    csrf: random_hex(),
                    last_ms: now_ms,
                    stamp: credentials_stamp(user),
                },
            );
        }
        id
    }

    /// The session's (user name, CSRF token), refreshing its idle timer.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<(String, String)> {
        let mut m = self.by_hash.lock().ok()?;
        let h = hash(id);
        let e = m.get_mut(&h)?;
        if now_ms - e.last_ms >= self.idle_ms {
            m.remove(&h);
            return None;
        }
        e.last_ms = now_ms;
        Some((e.user.clone(), e.csrf.clone()))
    }

    /// Whether the session still matches `user`'s credentials; ends it when not.
    pub fn current(&self, id: &str, user: &User) -> bool {
        let Ok(mut m) = self.by_hash.lock() else {
            return false;
        };
        let h = hash(id);
        let ok = m
            .get(&h)
            .is_some_and(|e| e.user == user.name && e.stamp == credentials_stamp(user));
        if !ok {
            m.remove(&h);
        }
        ok
    }

    /// Ends one session.
    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.by_hash.lock() {
            m.remove(&hash(id));
        }
    }

    /// Ends every session of `user`; how many.
    pub fn remove_user(&self, user: &str) -> usize {
        let Ok(mut m) = self.by_hash.lock() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, e| e.user != user);
        before - m.len()
    }
}

/// The session the request's cookie names, if it is live and still matches its user's
/// credentials. None without a cookie, for an unknown or idle one, or for a user gone or
/// changed since the login. The catalog failing is an error, not "no session".
pub async fn from_cookie(
    web: &WebState,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<Session>, CatalogError> {
    let Some(id) = cookies::session_id(headers) else {
        return Ok(None);
    };
    let Some((name, csrf)) = web.sessions.get(&id, wall_ms()) else {
        return Ok(None);
    };
    let Some(user) = state.catalog.user(&name).await? else {
        return Ok(None);
    };
    if !web.sessions.current(&id, &user) {
        return Ok(None);
    }
    Ok(Some(Session { user, csrf }))
}

async fn session_of(parts: &mut Parts, state: &AppState) -> Result<Session, PageError> {
    let Extension(web) = Extension::<WebState>::from_request_parts(parts, state)
        .await
        .map_err(|_| PageError::Internal("web state missing".into()))?;
    from_cookie(&web, &parts.headers, state)
        .await?
        .ok_or_else(|| PageError::Login {
            next: return_to::of_request(&parts.method, &parts.uri),
        })
}

macro_rules! page_role {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Session);

        impl FromRequestParts<AppState> for $name {
            type Rejection = PageError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let s = session_of(parts, state).await?;
                if s.user.role < $role {
                    return Err(PageError::Forbidden($role.name()));
                }
                Ok($name(s))
            }
        }
    };
}

page_role!(
    PageViewer,
    Role::Viewer,
    "A logged-in user (reads every page)."
);
page_role!(
    PageOperator,
    Role::Operator,
    "A logged-in operator or admin (alerts, registry, node control)."
);
page_role!(
    PageAdmin,
    Role::Admin,
    "A logged-in admin (users and tokens)."
);

/// The client's address, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, hash: &str) -> User {
        User {
            id: 1,
            name: name.into(),
            role,
            password_hash: hash.into(),
            focus_business: "[]".into(),
        }
    }

    #[test]
    fn sessions_expire_and_end_on_new_credentials() {
        let o = WebOptions {
            session_idle_ms: 1000,
            ..WebOptions::default()
        };
        let s = Sessions::new(&o);
        let ann = user("ann", Role::Admin, "h1");
        let id = s.create(&ann, 0);
        assert_eq!(s.get(&id, 900).map(|x| x.0).as_deref(), Some("ann"));
        assert!(s.get(&id, 1899).is_some(), "use refreshes the idle timer");
        assert!(s.get(&id, 2899).is_none());
        let a = s.create(&ann, 0);
        let b = s.create(&ann, 0);
        let c = s.create(&user("bob", Role::Viewer, "h2"), 0);
        assert_eq!(s.remove_user("ann"), 2);
        assert!(s.get(&a, 1).is_none() && s.get(&b, 1).is_none() && s.get(&c, 1).is_some());
        let d = s.create(&ann, 0);
        assert!(s.current(&d, &ann));
        assert!(
            !s.current(&d, &user("ann", Role::Viewer, "h1")),
            "role change"
        );
        assert!(s.get(&d, 1).is_none(), "and the session is gone");
        let e = s.create(&ann, 0);
        assert!(
            !s.current(&e, &user("ann", Role::Admin, "h3")),
            "password reset"
        );
    }
}
