//! An open KV bucket, as a guest holds it.

use crate::store::Namespace;

/// An open bucket, as the guest's `bucket` resource: its name as the guest
/// gave it and the namespace the host chose for it.
#[derive(Debug)]
pub struct Bucket {
    pub(crate) name: String,
    pub(crate) ns: Namespace,
}
