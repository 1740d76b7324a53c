//! The build slots, shared fairly: each tenant waits in its own line, and
//! a freed slot goes to the next tenant in turn (round robin over tenants
//! with a build waiting), never to whoever queued first. One tenant's ten
//! hour-long builds do not hold another tenant's one build behind them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Slots and the tenants' lines.
#[derive(Debug)]
pub struct FairQueue {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    free: usize,
    lines: BTreeMap<String, VecDeque<oneshot::Sender<Permit>>>,
    /// The tenant served last: the next turn starts after it.
    last: Option<String>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    queue: Arc<FairQueue>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.queue.inner.lock().free += 1;
        FairQueue::dispatch(&self.queue);
    }
}

impl FairQueue {
    pub fn new(slots: usize) -> Arc<FairQueue> {
        Arc::new(FairQueue {
            inner: Mutex::new(Inner {
                free: slots,
                lines: BTreeMap::new(),
                last: None,
            }),
        })
    }

    /// Waits for a slot in `tenant`'s turn. Dropping the future leaves the
    /// line (a slot handed to it meanwhile goes back).
    pub async fn acquire(self: &Arc<Self>, tenant: &str) -> Permit {
        let (tx, rx) = oneshot::channel();
        self.inner
            .lock()
            .lines
            .entry(tenant.to_string())
            .or_default()
            .push_back(tx);
        FairQueue::dispatch(self);
        match rx.await {
            Ok(p) => p,
            // The sender is only dropped with the queue itself.
            Err(_) => std::future::pending().await,
        }
    }

    /// Builds waiting, over all tenants.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.inner.lock().lines.values().map(VecDeque::len).sum()
    }

    /// Hands free slots to waiters, tenant after tenant. Permits are sent
    /// outside the lock: one sent to a waiter that left comes back through
    /// its own drop, which dispatches again.
    fn dispatch(queue: &Arc<FairQueue>) {
        loop {
            let sender = {
                let mut inner = queue.inner.lock();
                if inner.free == 0 {
                    return;
                }
                let next = match &inner.last {
                    Some(last) => inner
                        .lines
                        .range::<String, _>((
                            std::ops::Bound::Excluded(last.clone()),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                        .or_else(|| inner.lines.iter().next())
                        .map(|(k, _)| k.clone()),
                    None => inner.lines.keys().next().cloned(),
                };
                let Some(tenant) = next else {
                    return;
                };
                let line = inner.lines.get_mut(&tenant);
                let sender = line.and_then(VecDeque::pop_front);
                if inner.lines.get(&tenant).is_some_and(VecDeque::is_empty) {
                    inner.lines.remove(&tenant);
                }
                let Some(sender) = sender else {
                    continue;
                };
                if sender.is_closed() {
                    continue;
                }
                inner.free -= 1;
                inner.last = Some(tenant);
                sender
            };
            // A waiter gone since `is_closed` drops the permit here, which
            // gives the slot back and dispatches again.
            let _ = sender.send(Permit {
                queue: queue.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Served = Arc<Mutex<Vec<(&'static str, usize)>>>;

    /// Starts waiter `i` for `tenant`: it records itself when served and
    /// holds the slot until told to finish.
    fn waiter(
        q: &Arc<FairQueue>,
        tenant: &'static str,
        i: usize,
        served: Served,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let q = q.clone();
        let task = tokio::spawn(async move {
            let _p = q.acquire(tenant).await;
            served.lock().push((tenant, i));
            let _ = done_rx.await;
        });
        (task, done_tx)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..400 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_tenant_with_many_builds_does_not_hold_another_back() {
        let q = FairQueue::new(1);
        let served: Served = Arc::default();
        // Tenant a queues five builds first, then b queues one.
        let mut finish = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let tenant = if i < 5 { "a" } else { "b" };
            let (t, f) = waiter(&q, tenant, i, served.clone());
            tasks.push(t);
            finish.push(Some(f));
            until("the waiter to queue", || {
                q.waiting() + served.lock().len() == i + 1
            })
            .await;
        }
        // Finish each build as it is served.
        for k in 0..6 {
            until("the next build to be served", || served.lock().len() > k).await;
            let (_, i) = served.lock()[k];
            let _ = finish[i].take().expect("served once").send(());
        }
        for t in tasks {
            t.await.expect("waiter");
        }
        let order: Vec<&str> = served.lock().iter().map(|(t, _)| *t).collect();
        // b goes second (right after a's first), not sixth.
        assert_eq!(order, ["a", "b", "a", "a", "a", "a"]);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_gives_its_turn_away() {
        let q = FairQueue::new(1);
        let held = q.acquire("a").await;
        let q2 = q.clone();
        let gone = tokio::spawn(async move {
            let _p = q2.acquire("b").await;
        });
        until("b to queue", || q.waiting() == 1).await;
        gone.abort();
        let _ = gone.await;
        let q3 = q.clone();
        let next = tokio::spawn(async move { q3.acquire("c").await });
        drop(held);
        let p = tokio::time::timeout(Duration::from_secs(2), next)
            .await
            .expect("c is served though b left")
            .expect("task");
        drop(p);
        assert_eq!(q.inner.lock().free, 1, "no slot lost");
    }
}
