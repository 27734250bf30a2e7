//! A user's data in SQLite: erased in one transaction of the writer.

use crate::store::error::BackendError;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::writer::{Applied, Write};
use crate::store::users::{Erased, UserStore};

impl UserStore for SqliteStore {
    fn erase_user(&self, user: &str) -> Result<Erased, BackendError> {
        match self.write(Write::EraseUser(user.to_owned()))? {
            Applied::Erased(erased) => Ok(erased),
            other => Err(BackendError::new(format!(
                "the writer answered an erasure with {other:?}"
            ))),
        }
    }
}
