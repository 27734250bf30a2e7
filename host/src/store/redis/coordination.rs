//! Sessions shared by the processes of one Redis: `lease.lua` takes,
//! renews and gives up a session's lease, and tells the holder of an
//! interrupt; [`super::announce`] hears what the others publish.

use std::time::Duration;

use crate::store::coordination::{AnnouncementSink, Coordination};
use crate::store::error::SessionStoreError;
use crate::store::redis::RedisStore;
use crate::store::redis::keys::lease_key;

impl Coordination for RedisStore {
    fn lease(&self, session: &str, holder: &str, ttl: Duration) -> Result<bool, SessionStoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let held: i64 = self.with(|conn| {
            self.lease
                .key(lease_key(session))
                .arg(holder)
                .arg(ttl_ms)
                .arg("take")
                .invoke(conn)
        })?;
        Ok(held == 1)
    }

    fn release(&self, session: &str, holder: &str) -> Result<(), SessionStoreError> {
        self.with(|conn| {
            self.lease
                .key(lease_key(session))
                .arg(holder)
                .arg(0)
                .arg("release")
                .invoke::<()>(conn)
        })
        .map_err(Into::into)
    }

    fn announce(&self, sink: AnnouncementSink) -> bool {
        self.listen(sink);
        true
    }

    fn interrupt(&self, id: &str) -> Result<bool, SessionStoreError> {
        let held: i64 = self.with(|conn| {
            self.lease
                .key(lease_key(id))
                .arg(id)
                .arg(0)
                .arg("interrupt")
                .invoke(conn)
        })?;
        Ok(held == 1)
    }
}
