//! One integration-test binary runs every area's tests side by side. Most share the machine
//! well; a few measure time against the simulated kubelet or load the machine on purpose, and
//! those run alone: [`alone`] waits until no other test holds a namespace and keeps others from
//! starting meanwhile. Every [`crate::TestNamespace`] holds a shared pass for its test.

use std::{
    cell::{Cell, RefCell},
    sync::{Arc, LazyLock, Weak},
};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

static GATE: LazyLock<Arc<RwLock<()>>> = LazyLock::new(Arc::default);

thread_local! {
    /// Whether the test on this thread runs alone (it then takes no shared pass).
    static ALONE: Cell<bool> = const { Cell::new(false) };
    /// The shared pass of the test on this thread, while any of its namespaces lives: a
    /// second namespace of the same test must not queue behind a test waiting to run alone.
    static PASS: RefCell<Weak<OwnedRwLockReadGuard<()>>> = const { RefCell::new(Weak::new()) };
}

/// The right to run with no other test holding a namespace; dropped at the end of the test.
pub struct Alone {
    _gate: OwnedRwLockWriteGuard<()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}

/// Waits until this test may run alone. Call it first, before any namespace.
pub async fn alone() -> Alone {
    let gate = GATE.clone().write_owned().await;
    ALONE.with(|a| a.set(true));
    Alone { _gate: gate }
}

/// The shared pass of this test (none while it runs alone).
pub(crate) async fn shared() -> Option<Arc<OwnedRwLockReadGuard<()>>> {
    if ALONE.with(Cell::get) {
        return None;
    }
    if let Some(pass) = PASS.with(|p| p.borrow().upgrade()) {
        return Some(pass);
    }
    let pass = Arc::new(GATE.clone().read_owned().await);
    PASS.with(|p| *p.borrow_mut() = Arc::downgrade(&pass));
    Some(pass)
}
