//! [`FaultStore`]: an `object_store::ObjectStore` wrapper for tests that need a simulated clock
//! or storage failures.
//!
//! - Simulated clock ([`FaultStore::with_clock`]): every object written through the wrapper is
//!   stamped with the simulated time of its write, and `get`/`head`/`list` report that time as
//!   its Last-Modified. Objects the wrapper did not write keep the inner store's time, and
//!   conditional requests (`if_modified_since`, ...) are still evaluated by the inner store.
//! - Delete budget ([`FaultStore::set_delete_budget`]): `Some(n)` lets `n` more deletes succeed,
//!   then every delete fails, until the budget is lifted with `None`.
//! - One-shot faults ([`FaultStore::fail_next`]): the next `n` calls of an [`Op`] fail with an
//!   error of the test's choosing, without reaching the inner store; [`FaultStore::injected`]
//!   counts them and [`FaultStore::calls`] counts every call.
//!
//! A `FaultStore` is a cheap handle: its clones share the inner store, the clock, the faults and
//! the counters, so a test keeps one clone and hands another (as `Arc<dyn ObjectStore>`) to the
//! code under test.
//!
//! Deletes go to the inner store one object at a time (the budget counts single objects), so a
//! bulk `delete_stream` of the inner store is not exercised through the wrapper.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_opts` and `put_multipart_opts` (the start of a multipart upload).
    Put,
    /// `get_opts` without `head` (so also `get`, `get_range`, `get_ranges`).
    Get,
    /// `get_opts` with `head` (`head`).
    Head,
    /// `list`, `list_with_offset` and `list_with_delimiter`; an injected failure is the listing's
    /// first (and only) item.
    List,
    /// Each object of `delete_stream` (so also `delete`).
    Delete,
    /// `copy_opts` (so also `copy`, `copy_if_not_exists` and the copy of a rename).
    Copy,
}

impl Op {
    const ALL: [Op; 6] = [Op::Put, Op::Get, Op::Head, Op::List, Op::Delete, Op::Copy];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds the error of an injected fault from the path the operation was called on (the
/// listing prefix for [`Op::List`], the root path when it has none).
pub type MakeError = Arc<dyn Fn(&Path) -> object_store::Error + Send + Sync>;

/// The `store` of the errors this module makes.
const STORE: &str = "FaultStore";

/// A pending one-shot fault of one operation.
struct Fault {
    left: u64,
    make: MakeError,
}

#[derive(Default)]
struct State {
    /// Seconds since the epoch; `None`: no simulated clock.
    clock: Mutex<Option<i64>>,
    /// Simulated Last-Modified (seconds since the epoch) of the objects written through us.
    stamps: Mutex<HashMap<String, i64>>,
    /// `Some(n)`: `n` more deletes succeed, then every delete fails.
    deletes_left: Mutex<Option<u64>>,
    /// Successful deletes.
    deletes: AtomicU64,
    faults: Mutex<HashMap<Op, Fault>>,
    calls: [AtomicU64; Op::ALL.len()],
    injected: [AtomicU64; Op::ALL.len()],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock has failed already; keep the state usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// Counts a call of `op`, and returns the injected error if a fault of `op` is pending.
    fn enter(&self, op: Op, path: &Path) -> object_store::Result<()> {
        self.calls[op.index()].fetch_add(1, Ordering::SeqCst);
        let make = {
            let mut faults = lock(&self.faults);
            let Some(fault) = faults.get_mut(&op) else { return Ok(()) };
            fault.left -= 1;
            let make = fault.make.clone();
            if fault.left == 0 {
                faults.remove(&op);
            }
            make
        };
        self.injected[op.index()].fetch_add(1, Ordering::SeqCst);
        Err(make(path))
    }

    fn stamp(&self, location: &Path) {
        if let Some(now) = *lock(&self.clock) {
            lock(&self.stamps).insert(location.to_string(), now);
        }
    }

    fn restamp(&self, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(t) = lock(&self.stamps).get(meta.location.as_ref()) {
            meta.last_modified = (UNIX_EPOCH + Duration::from_secs(u64::try_from(*t).unwrap_or(0))).into();
        }
        meta
    }

    /// Takes one delete from the budget, or fails when it is spent.
    fn spend_delete(&self) -> object_store::Result<()> {
        if let Some(left) = lock(&self.deletes_left).as_mut() {
            if *left == 0 {
                return Err(object_store::Error::Generic { store: STORE, source: "injected delete failure".into() });
            }
            *left -= 1;
        }
        Ok(())
    }
}

/// An `ObjectStore` over another one, with a simulated clock and injectable failures (see the
/// module docs). Cloning gives another handle on the same store.
#[derive(Clone)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
}

impl FaultStore {
    /// Wraps `inner`, without a simulated clock and without faults.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultStore {
        FaultStore { inner, state: Arc::default() }
    }

    /// Wraps `inner` with the simulated clock set to `now` (seconds since the epoch).
    pub fn with_clock(inner: Arc<dyn ObjectStore>, now: i64) -> FaultStore {
        let store = FaultStore::new(inner);
        store.set_now(now);
        store
    }

    /// A new `InMemory` store with the simulated clock set to `now`.
    pub fn in_memory(now: i64) -> FaultStore {
        FaultStore::with_clock(Arc::new(InMemory::new()), now)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// This handle as the `Arc<dyn ObjectStore>` code under test takes.
    pub fn as_dyn(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.clone())
    }

    // ----- clock -----

    /// The simulated time, in seconds since the epoch.
    ///
    /// # Panics
    /// When the store has no simulated clock (see [`FaultStore::with_clock`]).
    pub fn now(&self) -> i64 {
        lock(&self.state.clock).expect("FaultStore without a simulated clock: use with_clock or set_now")
    }

    /// Sets the simulated time (and turns the clock on): later writes are stamped with it.
    pub fn set_now(&self, now: i64) {
        *lock(&self.state.clock) = Some(now);
    }

    /// Moves the simulated time by `secs` (which may be negative).
    ///
    /// # Panics
    /// When the store has no simulated clock.
    pub fn advance(&self, secs: i64) {
        let mut clock = lock(&self.state.clock);
        let now = clock.expect("FaultStore without a simulated clock: use with_clock or set_now");
        *clock = Some(now + secs);
    }

    // ----- deletes -----

    /// `Some(n)`: `n` more deletes succeed, then every delete fails (with
    /// `object_store::Error::Generic`) until the budget changes; `None`: deletes are unlimited.
    pub fn set_delete_budget(&self, budget: Option<u64>) {
        *lock(&self.state.deletes_left) = budget;
    }

    /// What is left of the delete budget (`None`: unlimited).
    pub fn delete_budget(&self) -> Option<u64> {
        *lock(&self.state.deletes_left)
    }

    /// Successful deletes so far.
    pub fn deletes(&self) -> u64 {
        self.state.deletes.load(Ordering::SeqCst)
    }

    // ----- one-shot faults -----

    /// The next `n` calls of `op` fail with `make(path)` instead of reaching the inner store
    /// (they count as [`FaultStore::calls`], not as deletes or writes). Replaces a fault of `op`
    /// still pending; `n == 0` clears it.
    pub fn fail_next(&self, op: Op, n: u64, make: impl Fn(&Path) -> object_store::Error + Send + Sync + 'static) {
        let mut faults = lock(&self.state.faults);
        if n == 0 {
            faults.remove(&op);
        } else {
            faults.insert(op, Fault { left: n, make: Arc::new(make) });
        }
    }

    /// [`FaultStore::fail_next`] with `object_store::Error::Generic` ("injected <op> failure on
    /// <path>"), the error of a transient server or network failure.
    pub fn fail_next_generic(&self, op: Op, n: u64) {
        self.fail_next(op, n, move |path| object_store::Error::Generic {
            store: STORE,
            source: format!("injected {op} failure on {path}").into(),
        });
    }

    /// How many calls of `op` are still to fail.
    pub fn pending(&self, op: Op) -> u64 {
        lock(&self.state.faults).get(&op).map_or(0, |f| f.left)
    }

    /// Drops every pending one-shot fault (the delete budget stays).
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// How many calls of `op` failed with an injected fault so far.
    pub fn injected(&self, op: Op) -> u64 {
        self.state.injected[op.index()].load(Ordering::SeqCst)
    }

    /// How many calls of `op` were made so far (injected failures included).
    pub fn calls(&self, op: Op) -> u64 {
        self.state.calls[op.index()].load(Ordering::SeqCst)
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("inner", &self.inner)
            .field("clock", &*lock(&self.state.clock))
            .field("delete_budget", &self.delete_budget())
            .field("deletes", &self.deletes())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

/// A listing that fails at once with `err`.
fn failed_listing(err: object_store::Error) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    futures::stream::once(async move { Err(err) }).boxed()
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.state.enter(Op::Put, location)?;
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.state.stamp(location);
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.state.enter(Op::Put, location)?;
        // Stamped when the upload starts.
        self.state.stamp(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.state.enter(if options.head { Op::Head } else { Op::Get }, location)?;
        let mut r = self.inner.get_opts(location, options).await?;
        r.meta = self.state.restamp(r.meta);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store.state.enter(Op::Delete, &location)?;
                    store.state.spend_delete()?;
                    store.inner.delete(&location).await?;
                    lock(&store.state.stamps).remove(location.as_ref());
                    store.state.deletes.fetch_add(1, Ordering::SeqCst);
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.state.enter(Op::List, prefix.unwrap_or(&Path::default())) {
            return failed_listing(e);
        }
        let state = self.state.clone();
        self.inner.list(prefix).map_ok(move |m| state.restamp(m)).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.state.enter(Op::List, prefix.unwrap_or(&Path::default())) {
            return failed_listing(e);
        }
        let state = self.state.clone();
        self.inner.list_with_offset(prefix, offset).map_ok(move |m| state.restamp(m)).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.state.enter(Op::List, prefix.unwrap_or(&Path::default()))?;
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects = r.objects.into_iter().map(|m| self.state.restamp(m)).collect();
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.state.enter(Op::Copy, to)?;
        self.inner.copy_opts(from, to, options).await?;
        self.state.stamp(to);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_717_243_200;

    fn p(s: &str) -> Path {
        Path::from(s)
    }

    async fn put(store: &FaultStore, key: &str) -> object_store::Result<PutResult> {
        store.put(&p(key), PutPayload::from_static(b"data")).await
    }

    async fn listed(store: &FaultStore) -> object_store::Result<Vec<(String, i64)>> {
        let mut v: Vec<(String, i64)> =
            store.list(None).map_ok(|m| (m.location.to_string(), m.last_modified.timestamp())).try_collect().await?;
        v.sort();
        Ok(v)
    }

    #[tokio::test]
    async fn stamps_objects_with_the_simulated_clock() {
        let store = FaultStore::in_memory(T0);
        put(&store, "a/1").await.unwrap();
        store.advance(3600);
        put(&store, "a/2").await.unwrap();
        store.copy(&p("a/1"), &p("b/1")).await.unwrap();
        assert_eq!(store.now(), T0 + 3600);

        assert_eq!(
            listed(&store).await.unwrap(),
            [("a/1".into(), T0), ("a/2".into(), T0 + 3600), ("b/1".into(), T0 + 3600)]
        );
        assert_eq!(store.head(&p("a/1")).await.unwrap().last_modified.timestamp(), T0);
        assert_eq!(store.get(&p("a/2")).await.unwrap().meta.last_modified.timestamp(), T0 + 3600);
        let dir = store.list_with_delimiter(Some(&p("a"))).await.unwrap();
        assert_eq!(dir.objects.iter().map(|m| m.last_modified.timestamp()).collect::<Vec<_>>(), [T0, T0 + 3600]);

        // An overwrite is stamped again; the inner store keeps its own times.
        store.advance(60);
        put(&store, "a/1").await.unwrap();
        assert_eq!(store.head(&p("a/1")).await.unwrap().last_modified.timestamp(), T0 + 3660);
        assert_ne!(store.inner().head(&p("a/1")).await.unwrap().last_modified.timestamp(), T0 + 3660);
    }

    #[tokio::test]
    async fn without_a_clock_times_are_the_inner_stores() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultStore::new(inner.clone());
        put(&store, "x").await.unwrap();
        let t = store.head(&p("x")).await.unwrap().last_modified;
        assert_eq!(inner.head(&p("x")).await.unwrap().last_modified, t);
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.now())).is_err());
    }

    #[tokio::test]
    async fn the_delete_budget_lets_n_deletes_through_then_fails() {
        let store = FaultStore::in_memory(T0);
        for k in ["k1", "k2", "k3", "k4"] {
            put(&store, k).await.unwrap();
        }
        store.set_delete_budget(Some(2));
        let paths = futures::stream::iter(["k1", "k2", "k3"].map(|k| Ok(p(k)))).boxed();
        let results: Vec<_> = store.delete_stream(paths).collect().await;
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        let err = results[2].as_ref().unwrap_err().to_string();
        assert!(err.contains("injected delete failure"), "{err}");
        assert_eq!((store.deletes(), store.delete_budget()), (2, Some(0)));
        assert!(store.delete(&p("k4")).await.is_err());
        assert_eq!(listed(&store).await.unwrap().len(), 2, "k3 and k4 remain");

        store.set_delete_budget(None);
        store.delete(&p("k4")).await.unwrap();
        assert_eq!(store.deletes(), 3);
        assert_eq!(listed(&store).await.unwrap(), [("k3".into(), T0)]);
    }

    #[tokio::test]
    async fn injects_the_chosen_error_into_the_next_calls() {
        let store = FaultStore::in_memory(T0);
        put(&store, "obj").await.unwrap();

        store.fail_next(Op::Get, 2, |path| object_store::Error::NotFound {
            path: path.to_string(),
            source: "injected".into(),
        });
        for _ in 0..2 {
            let err = store.get(&p("obj")).await.unwrap_err();
            assert!(matches!(err, object_store::Error::NotFound { ref path, .. } if path == "obj"), "{err}");
        }
        assert_eq!(store.get(&p("obj")).await.unwrap().bytes().await.unwrap(), &b"data"[..]);
        // head is its own operation.
        store.head(&p("obj")).await.unwrap();
        assert_eq!((store.calls(Op::Get), store.injected(Op::Get), store.pending(Op::Get)), (3, 2, 0));
        assert_eq!((store.calls(Op::Head), store.injected(Op::Head)), (1, 0));

        store.fail_next_generic(Op::Put, 1);
        let err = put(&store, "new").await.unwrap_err().to_string();
        assert!(err.contains("injected put failure on new"), "{err}");
        assert!(store.inner().head(&p("new")).await.is_err(), "the failed put did not reach the inner store");
        put(&store, "new").await.unwrap();

        store.fail_next_generic(Op::List, 1);
        let err = listed(&store).await.unwrap_err().to_string();
        assert!(err.contains("injected list failure"), "{err}");
        assert_eq!(listed(&store).await.unwrap().len(), 2);
        assert_eq!(store.injected(Op::List), 1);

        store.fail_next_generic(Op::Delete, 1);
        assert!(store.delete(&p("obj")).await.is_err());
        assert_eq!((store.deletes(), store.injected(Op::Delete)), (0, 1));
        store.delete(&p("obj")).await.unwrap();
        assert_eq!(store.deletes(), 1);

        store.fail_next_generic(Op::Copy, 5);
        store.clear_faults();
        store.copy(&p("new"), &p("copy")).await.unwrap();
        assert_eq!(store.injected(Op::Copy), 0);
    }
}
