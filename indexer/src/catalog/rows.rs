//! How rows decode into the catalog's types (`#[derive(sqlx::FromRow)]` on each, by column
//! name). Booleans are stored as 0/1 in a BIGINT on both engines (one schema text for both;
//! SQLite has no boolean type), and sqlx's `Any` driver decodes `bool` only from a boolean
//! column, so boolean fields read through [`Flag`].

use sqlx::any::{Any, AnyTypeInfo};
use sqlx::decode::Decode;
use sqlx::error::BoxDynError;
use sqlx::types::Type;

/// A 0/1 BIGINT column read as a `bool` (`#[sqlx(try_from = "Flag")]`): any non-zero is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(bool);

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.0
    }
}

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Flag(<i64 as Decode<'r, Any>>::decode(value)? != 0))
    }
}

/// A `role` column that names no [`super::Role`].
#[derive(Debug, thiserror::Error)]
#[error("role {0:?}")]
pub struct UnknownRole(pub String);

impl TryFrom<String> for super::Role {
    type Error = UnknownRole;

    fn try_from(s: String) -> Result<Self, UnknownRole> {
        super::Role::parse(&s).ok_or(UnknownRole(s))
    }
}
