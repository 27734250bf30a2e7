//! What a guest gets back when the host refuses one of its calls.

/// A refusal the guest caused and can handle: each version of the world
/// turns it into its own `error` value. A host fault traps instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// A key or value broke a rule: syntax, size, schema.
    Invalid(String),
    /// The write would go over a quota.
    QuotaExceeded(String),
    /// The capability was not granted.
    Denied(String),
    /// The backend failed; the call may succeed if retried.
    Unavailable(String),
}
