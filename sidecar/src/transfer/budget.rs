//! One memory budget for the file bytes that streamed uploads hold at once: every chunk read
//! from a file takes its size from the budget before it is read and gives it back when the
//! last reference to it is dropped, that is once the HTTP client has written it to the socket.
//! Readers wait when the budget is spent, so the bytes in flight stay bounded whatever the
//! number of transfers, parts in flight and SSTable sizes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget granularity: permits count KiB, so that a budget of any practical size fits a
/// semaphore's permit count.
const UNIT: usize = 1024;

/// A shared budget of bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    units: usize,
}

/// A chunk's bytes with its share of the budget, given back on drop.
struct Held {
    buf: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Budget {
        let units = (bytes / UNIT).max(1);
        Budget { sem: Arc::new(Semaphore::new(units)), units }
    }

    /// Waits, blocking the thread (a blocking-pool reader), until `len` bytes fit; the share is
    /// returned by [`Budget::wrap`]'s chunk when dropped. A request larger than the budget
    /// waits for the whole budget.
    pub fn take_blocking(&self, len: usize) -> OwnedSemaphorePermit {
        let n = len.div_ceil(UNIT).clamp(1, self.units) as u32;
        futures::executor::block_on(self.sem.clone().acquire_many_owned(n)).expect("the budget is never closed")
    }

    /// `buf` as a chunk that holds `permit` until its last reference is dropped.
    pub fn wrap(buf: Vec<u8>, permit: OwnedSemaphorePermit) -> Bytes {
        Bytes::from_owner(Held { buf, _permit: permit })
    }

    /// Bytes currently free.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.sem.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_give_their_share_back_when_dropped() {
        let b = Budget::new(64 << 10);
        let p = b.take_blocking(40 << 10);
        let chunk = Budget::wrap(vec![1u8; 40 << 10], p);
        assert_eq!(b.available(), 24 << 10);
        let part = chunk.slice(0..10);
        drop(chunk);
        assert_eq!(b.available(), 24 << 10, "a slice still holds the chunk");
        drop(part);
        assert_eq!(b.available(), 64 << 10);
        let whole = b.take_blocking(1 << 20);
        assert_eq!(b.available(), 0, "a chunk larger than the budget takes all of it");
        drop(whole);
    }
}
