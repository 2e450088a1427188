//! What can go wrong on a cluster: the lock outcomes every backend shares, plus the coordinator's
//! own failures, each typed so a caller can act on it.

use std::fmt;
use std::time::Duration;

use leasehold::{BackendError, LockError};

/// An error of the etcd backend.
///
/// # Examples
///
/// ```
/// use leasehold::{BackendError, LockError};
/// use leasehold_etcd::EtcdError;
/// let e = EtcdError::Lock(LockError::WouldBlock);
/// assert_eq!(e.lock_error(), Some(&LockError::WouldBlock));
/// assert!(EtcdError::CircuitOpen { retry_in: std::time::Duration::from_secs(1) }.lock_error().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EtcdError {
    /// One of the outcomes every backend shares: `WouldBlock`, `TimedOut`, `Expired` (the lease
    /// was lost, also while waiting), `PermitMismatch`, `InvalidPermits`, `InvalidTtl`.
    Lock(LockError),
    /// No member answered within the operation's bound (`EtcdOptions::op_timeout`): the cluster
    /// is down or this client is cut off from it. No lock was acquired.
    Unavailable {
        /// How long the operation tried.
        after: Duration,
        /// The last failure seen.
        last: String,
    },
    /// Recent operations all found the cluster unavailable: this one was refused without being
    /// tried, so a dead cluster is not hammered. Try again after `retry_in`.
    CircuitOpen {
        /// When the next call will be let through.
        retry_in: Duration,
    },
    /// The fenced write was refused: the lock key with this token no longer exists (the holding
    /// was lost and perhaps taken by another holder).
    FenceRejected {
        /// The token the write was fenced with.
        token: u64,
    },
    /// A lock name etcd cannot take (it contains a NUL byte, which separates a lock's name from
    /// its waiters' keys).
    InvalidName {
        /// The name.
        name: String,
    },
    /// etcd refused the request for another reason (permissions, a malformed request).
    Etcd {
        /// etcd's message.
        message: String,
    },
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Lock(e) => fmt::Display::fmt(e, f),
            EtcdError::Unavailable { after, last } => {
                write!(f, "the etcd cluster did not answer within {after:?} (last error: {last})")
            }
            EtcdError::CircuitOpen { retry_in } => {
                write!(f, "the etcd cluster was unavailable for the last calls; not trying again for {retry_in:?}")
            }
            EtcdError::FenceRejected { token } => {
                write!(f, "fenced write refused: the holding with token #{token} no longer exists")
            }
            EtcdError::InvalidName { name } => write!(f, "lock name {name:?} contains a NUL byte"),
            EtcdError::Etcd { message } => write!(f, "etcd refused the request: {message}"),
        }
    }
}

impl std::error::Error for EtcdError {}

impl From<LockError> for EtcdError {
    fn from(e: LockError) -> Self {
        EtcdError::Lock(e)
    }
}

impl BackendError for EtcdError {
    fn lock_error(&self) -> Option<&LockError> {
        match self {
            EtcdError::Lock(e) => Some(e),
            _ => None,
        }
    }
}

/// How the client classifies one failed call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying on another member or after a leader election.
    Transient(String),
    /// The lease is gone (expired or revoked).
    LeaseGone,
    /// Retrying will not help.
    Fatal(String),
}

pub(crate) fn classify(e: etcd_client::Error) -> Failure {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::NotFound => Failure::LeaseGone,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Cancelled => Failure::Transient(status.message().to_string()),
            _ => Failure::Fatal(status.message().to_string()),
        },
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => Failure::LeaseGone,
        etcd_client::Error::InvalidArgs(m) => Failure::Fatal(m),
        other => Failure::Transient(other.to_string()),
    }
}
