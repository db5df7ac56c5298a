//! One upstream's admission: how many requests may be in flight to it (a
//! limit that adapts to what the upstream sustains) and whether it is up (a
//! circuit that pauses dispatch through an outage instead of failing
//! requests).
//!
//! The limit is AIMD, as in Netflix's concurrency-limits: it starts low and
//! doubles per round of answers (slow start) until the first sign of
//! overload, then grows by one per round while latency holds, and is cut by
//! a quarter on a 429 or 503, or when the recent latency rises to twice the
//! long-run one (requests queueing inside the engine). `--concurrency` is
//! its ceiling; an engine that publishes its slots (llama.cpp's `/props`)
//! lowers the ceiling to them.
//!
//! Permits go to the tenants waiting for them by weighted deficit round
//! robin (a tenant of weight 3 gets three permits for every one of a
//! tenant of weight 1 while both wait), and within a tenant in the order
//! asked, so its batches take turns. A lowered limit is paid as a debt:
//! permits released while it is owed are kept back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::{HashMap, VecDeque};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The limit a gate starts at (below its ceiling).
const INITIAL: f64 = 4.0;
/// The cut on a sign of overload.
const BACKOFF: f64 = 0.75;
/// Recent latency this many times the long-run one is a sign of overload.
const TOLERANCE: f64 = 2.0;
/// Weights of the recent and the long-run latency averages.
const SHORT: f64 = 0.2;
const LONG: f64 = 0.02;
/// Failures in a row, with no success between, that open the circuit.
const TRIP: u32 = 2;

/// The limit and what it is judged by.
struct Limit {
    value: f64,
    ceiling: usize,
    slow_start: bool,
    short: Option<f64>,
    long: Option<f64>,
    last_cut: Option<Instant>,
}

/// Whether the upstream is taken to be up.
struct Circuit {
    failures: u32,
    /// Cancelled when the upstream is found down: the requests in flight
    /// to it are abandoned (and sent again once it is back).
    down: CancellationToken,
    since: Option<Instant>,
}

/// One upstream's limit and circuit.
pub struct Gate {
    name: String,
    sched: Mutex<Sched>,
    limit: Mutex<Limit>,
    circuit: Mutex<Circuit>,
    up: watch::Sender<bool>,
    successes: AtomicU64,
    outages: AtomicU64,
    /// Requests routed here and not finished: waiting for a permit or in
    /// flight (how replicas are chosen).
    load: AtomicUsize,
    /// The engine says requests wait inside it: the limit does not grow.
    saturated: std::sync::atomic::AtomicBool,
}

/// Who gets the next permit.
#[derive(Default)]
struct Sched {
    /// Permits free now.
    available: usize,
    /// Permits owed after a cut: the next ones released are kept back.
    debt: usize,
    /// The requests waiting, by tenant, in the order asked.
    queues: HashMap<Arc<str>, VecDeque<oneshot::Sender<GatePermit>>>,
    /// The tenants that wait, in round-robin order.
    ring: VecDeque<Arc<str>>,
    /// Each waiting tenant's weight and credit (deficit round robin).
    weight: HashMap<Arc<str>, f64>,
    credit: HashMap<Arc<str>, f64>,
}

impl Sched {
    /// The next waiter by weighted deficit round robin: the tenant at the
    /// front gets its weight in credit when its turn comes, and one
    /// permit per unit of credit. A tenant keeps its place while it asks
    /// again (a batch asks for one permit at a time), and leaves the ring,
    /// with its credit, once it is found with nobody waiting.
    fn next(&mut self) -> Option<oneshot::Sender<GatePermit>> {
        loop {
            let t = self.ring.front()?.clone();
            let Some(queue) = self.queues.get_mut(&t).filter(|q| !q.is_empty()) else {
                self.ring.pop_front();
                self.queues.remove(&t);
                self.credit.remove(&t);
                self.weight.remove(&t);
                continue;
            };
            let credit = self.credit.entry(t.clone()).or_insert(0.0);
            if *credit < 1.0 {
                *credit += self.weight.get(&t).copied().unwrap_or(1.0);
                if *credit < 1.0 {
                    self.ring.rotate_left(1);
                    continue;
                }
            }
            *credit -= 1.0;
            let waiter = queue.pop_front();
            if *credit < 1.0 {
                self.ring.rotate_left(1);
            }
            return waiter;
        }
    }
}

/// Leave to send one request (and its retries) to the upstream.
pub struct GatePermit {
    gate: Arc<Gate>,
    /// Given back on drop.
    armed: bool,
    /// Counted in the gate's load (once its request holds it).
    counted: bool,
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        if self.counted {
            self.gate.load.fetch_sub(1, Ordering::AcqRel);
        }
        if self.armed {
            self.gate.release();
        }
    }
}

/// A place in the gate's queue, taken at once (not when first polled):
/// [`Ask::granted`] waits for its permit. Dropped before, it leaves the
/// queue (a permit already handed to it goes back to the gate).
pub struct Ask {
    gate: Arc<Gate>,
    /// Taken on the spot (a permit was free), or to come (`None` once
    /// granted).
    state: Option<AskState>,
    /// Counted in the gate's load while it waits.
    waiting: bool,
}

enum AskState {
    Free(GatePermit),
    Queued(oneshot::Receiver<GatePermit>),
}

impl Ask {
    /// Wait for the permit.
    pub async fn granted(mut self) -> GatePermit {
        let mut permit = match self.state.take() {
            Some(AskState::Free(p)) => p,
            // The sender lives in the queue until a permit is sent on it.
            Some(AskState::Queued(rx)) => match rx.await {
                Ok(p) => p,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        };
        permit.counted = true;
        self.waiting = false;
        permit
    }

    /// The gate asked.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

impl Drop for Ask {
    fn drop(&mut self) {
        if self.waiting {
            self.gate.load.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What became of one attempt, as the limit sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Answered (any status the upstream chose), after this long.
    Answered(Duration),
    /// Refused for load: 429, or 503.
    Overloaded,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// A gate for the upstream `name`, with at most `ceiling` requests in
    /// flight.
    pub fn new(name: impl Into<String>, ceiling: usize) -> Arc<Gate> {
        let ceiling = ceiling.max(1);
        let start = INITIAL.min(ceiling as f64);
        Arc::new(Gate {
            name: name.into(),
            sched: Mutex::new(Sched {
                available: start as usize,
                ..Sched::default()
            }),
            limit: Mutex::new(Limit {
                value: start,
                ceiling,
                slow_start: true,
                short: None,
                long: None,
                last_cut: None,
            }),
            circuit: Mutex::new(Circuit {
                failures: 0,
                down: CancellationToken::new(),
                since: None,
            }),
            up: watch::Sender::new(true),
            successes: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            load: AtomicUsize::new(0),
            saturated: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The upstream this gate is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait for a permit, in turn with the other requests of `tenant` and
    /// by `weight` against the other tenants waiting.
    pub async fn acquire(self: &Arc<Self>, tenant: &str, weight: u32) -> GatePermit {
        self.ask(tenant, weight).granted().await
    }

    /// Take a place in the queue now, as [`Gate::acquire`] would on its
    /// first poll. A batch sending its requests keeps one ask ahead of the
    /// one it waits on, so that it still has a place when the permit
    /// before comes, however late its task runs: a tenant found with
    /// nobody waiting loses its turn, and its weight would then count for
    /// less on a loaded machine.
    pub fn ask(self: &Arc<Self>, tenant: &str, weight: u32) -> Ask {
        self.load.fetch_add(1, Ordering::AcqRel);
        let mut s = lock(&self.sched);
        let state = if s.available > 0 && s.ring.is_empty() {
            s.available -= 1;
            AskState::Free(GatePermit {
                gate: self.clone(),
                armed: true,
                counted: false,
            })
        } else {
            let (tx, rx) = oneshot::channel();
            let t: Arc<str> = tenant.into();
            if !s.weight.contains_key(&t) {
                s.ring.push_back(t.clone());
            }
            s.queues.entry(t.clone()).or_default().push_back(tx);
            s.weight.insert(t, f64::from(weight.max(1)));
            // Free permits go out in turn (perhaps to this request).
            self.hand_out(&mut s);
            AskState::Queued(rx)
        };
        Ask {
            gate: self.clone(),
            state: Some(state),
            waiting: true,
        }
    }

    /// A permit comes back: to the debt, else to the next waiter in turn.
    fn release(self: &Arc<Self>) {
        let mut s = lock(&self.sched);
        if s.debt > 0 {
            s.debt -= 1;
            return;
        }
        s.available += 1;
        self.hand_out(&mut s);
    }

    /// Give the free permits to the waiters, in turn.
    fn hand_out(self: &Arc<Self>, s: &mut Sched) {
        while s.available > 0 {
            let Some(tx) = s.next() else { return };
            s.available -= 1;
            let permit = GatePermit {
                gate: self.clone(),
                armed: true,
                counted: false,
            };
            // A request that stopped waiting: the permit is free again.
            if let Err(mut p) = tx.send(permit) {
                p.armed = false;
                s.available += 1;
            }
        }
    }

    /// Requests routed here and not finished.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Acquire)
    }

    /// The limit now (requests in flight allowed).
    pub fn limit(&self) -> usize {
        lock(&self.limit).value as usize
    }

    /// Its ceiling now.
    pub fn ceiling(&self) -> usize {
        lock(&self.limit).ceiling
    }

    /// Answers recorded so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Acquire)
    }

    /// Outages declared so far.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Whether the upstream is taken to be up.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Since when it has been down, if it is.
    pub fn down_since(&self) -> Option<Instant> {
        lock(&self.circuit).since
    }

    /// The token cancelled when the upstream is next found down.
    pub fn down_token(&self) -> CancellationToken {
        lock(&self.circuit).down.clone()
    }

    /// Wait until the upstream is up, or `deadline`: whether it is up.
    pub async fn wait_up(&self, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.up.subscribe();
        tokio::select! {
            r = rx.wait_for(|up| *up) => r.is_ok(),
            _ = tokio::time::sleep_until(deadline) => self.is_up(),
        }
    }

    /// The engine says how many requests it runs at once: no more are sent.
    pub fn set_ceiling(self: &Arc<Self>, ceiling: usize, max: usize) -> bool {
        let ceiling = ceiling.clamp(1, max.max(1));
        let mut l = lock(&self.limit);
        if l.ceiling == ceiling {
            return false;
        }
        l.ceiling = ceiling;
        // The engine runs that many at once: start there.
        self.set(&mut l, ceiling as f64);
        true
    }

    /// Record what an attempt's answer says of the upstream's load.
    pub fn signal(self: &Arc<Self>, signal: Signal) {
        let mut l = lock(&self.limit);
        match signal {
            Signal::Answered(took) => {
                self.successes.fetch_add(1, Ordering::AcqRel);
                self.closed();
                let secs = took.as_secs_f64();
                let short = l.short.map_or(secs, |s| s + SHORT * (secs - s));
                let long = l.long.map_or(secs, |s| s + LONG * (secs - s));
                l.short = Some(short);
                l.long = Some(long);
                if short > TOLERANCE * long && l.value > 1.0 {
                    self.cut(&mut l);
                } else if self.saturated.load(Ordering::Acquire) {
                    // Held where it is while the engine queues.
                } else if l.slow_start {
                    let next = l.value + 1.0;
                    self.set(&mut l, next);
                } else {
                    let next = l.value + 1.0 / l.value;
                    self.set(&mut l, next);
                }
            }
            Signal::Overloaded => self.cut(&mut l),
        }
    }

    /// What the engine says of its queue (vLLM's `/metrics`
    /// `num_requests_waiting`): while requests wait inside it (its own
    /// traffic too), the limit is cut and does not grow.
    pub fn engine_queue(self: &Arc<Self>, waiting: u64) {
        self.saturated.store(waiting > 0, Ordering::Release);
        if waiting > 0 {
            self.cut(&mut lock(&self.limit));
        }
    }

    /// Cut the limit, at most once per recent latency (one round of
    /// answers shows one overload).
    fn cut(self: &Arc<Self>, l: &mut Limit) {
        let round = Duration::from_secs_f64(l.short.unwrap_or(0.1).clamp(0.05, 5.0));
        if l.last_cut.is_some_and(|t| t.elapsed() < round) {
            return;
        }
        l.last_cut = Some(Instant::now());
        l.slow_start = false;
        let next = (l.value * BACKOFF).max(1.0);
        if next as usize != l.value as usize {
            tracing::info!(upstream = %self.name, from = l.value as usize, to = next as usize, "the upstream shows overload: concurrency limit cut");
        }
        self.set(l, next);
    }

    /// Move the limit to `value` (within 1 and the ceiling), adding or
    /// owing permits for the change of its whole part.
    fn set(self: &Arc<Self>, l: &mut Limit, value: f64) {
        let value = value.clamp(1.0, l.ceiling as f64);
        let (old, new) = (l.value as usize, value as usize);
        l.value = value;
        if new > old {
            for _ in old..new {
                self.release();
            }
        } else if new < old {
            let cut = old - new;
            let mut s = lock(&self.sched);
            let taken = cut.min(s.available);
            s.available -= taken;
            s.debt += cut - taken;
        }
        if new != old {
            tracing::debug!(upstream = %self.name, limit = new, "concurrency limit changed");
        }
    }

    /// An attempt could not reach the upstream (refused, reset, no answer
    /// in time, 502/503/504). Returns whether this opened the circuit:
    /// then the caller starts probing it.
    pub fn unreachable(self: &Arc<Self>, certain: bool) -> bool {
        let mut c = lock(&self.circuit);
        c.failures += 1;
        if c.since.is_some() || (c.failures < TRIP && !certain) {
            return false;
        }
        c.since = Some(Instant::now());
        self.outages.fetch_add(1, Ordering::AcqRel);
        c.down.cancel();
        c.down = CancellationToken::new();
        drop(c);
        self.up.send_replace(false);
        // Resume gently: the engine that comes back may be a new one.
        let mut l = lock(&self.limit);
        l.slow_start = true;
        let start = INITIAL.min(l.ceiling as f64);
        self.set(&mut l, start);
        true
    }

    /// Another engine answers at the upstream's address now: the requests
    /// in flight to the one before are abandoned (and sent again at once).
    pub fn replaced(&self) {
        let mut c = lock(&self.circuit);
        c.down.cancel();
        c.down = CancellationToken::new();
    }

    /// The upstream answered: the failures in a row end, and a circuit
    /// that was open closes.
    pub fn closed(&self) {
        let mut c = lock(&self.circuit);
        c.failures = 0;
        if let Some(since) = c.since.take() {
            drop(c);
            self.up.send_replace(true);
            tracing::info!(upstream = %self.name, down_for = ?since.elapsed(), "the upstream answers again; dispatch resumes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits(g: &Gate) -> usize {
        lock(&g.sched).available
    }

    #[test]
    fn slow_start_doubles_until_overload_then_grows_by_one_per_round() {
        let g = Gate::new("u", 64);
        assert_eq!((g.limit(), permits(&g)), (4, 4));
        for _ in 0..4 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(g.limit(), 8);
        g.signal(Signal::Overloaded);
        assert_eq!(g.limit(), 6);
        // A second overload in the same round is the same overload.
        g.signal(Signal::Overloaded);
        assert_eq!(g.limit(), 6);
        // A round is as many answers as the limit: about one more per round.
        for _ in 0..7 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(g.limit(), 7, "one more per round of answers");
        assert_eq!(permits(&g), 7);
    }

    #[test]
    fn rising_latency_cuts_the_limit() {
        let g = Gate::new("u", 64);
        for _ in 0..40 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        let before = g.limit();
        for _ in 0..6 {
            g.signal(Signal::Answered(Duration::from_secs(2)));
        }
        assert!(g.limit() < before, "{} !< {before}", g.limit());
    }

    #[test]
    fn an_engine_that_queues_holds_the_limit_down() {
        let g = Gate::new("u", 64);
        for _ in 0..8 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(g.limit(), 12);
        g.engine_queue(3);
        assert_eq!(g.limit(), 9);
        for _ in 0..20 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(g.limit(), 9, "no growth while the engine queues");
        g.engine_queue(0);
        for _ in 0..10 {
            g.signal(Signal::Answered(Duration::from_millis(100)));
        }
        assert!(g.limit() > 9);
    }

    /// Two tenants that each send one request at a time and ask for the
    /// next permit only after another permit has come back (their tasks
    /// run late, as on a loaded machine): with no ask kept ahead the
    /// heavy one gets half the permits, not three quarters; with one, it
    /// gets its weight.
    #[test]
    fn an_ask_kept_ahead_keeps_the_weight_when_asks_come_late() {
        use futures_util::FutureExt;
        use std::future::Future;
        use std::pin::Pin;
        type Granted = Pin<Box<dyn Future<Output = GatePermit> + Send>>;
        let share = |ahead: usize| {
            let g = Gate::new("u", 1);
            let held = g.acquire("start", 1).now_or_never().expect("free");
            let tenants = [("light", 1), ("heavy", 3)];
            let ask = |t: usize| -> Granted {
                let (name, weight) = tenants[t];
                Box::pin(g.ask(name, weight).granted())
            };
            let mut asks: Vec<VecDeque<Granted>> = (0..2)
                .map(|t| (0..=ahead).map(|_| ask(t)).collect())
                .collect();
            let (mut late, mut got, mut held) = (Vec::<usize>::new(), [0u32; 2], Some(held));
            for _ in 0..400 {
                // A permit comes back; the asks owed since the last one
                // are made only now.
                drop(held.take());
                for t in late.drain(..) {
                    asks[t].push_back(ask(t));
                }
                for t in 0..2 {
                    if let Some(p) = asks[t].front_mut().and_then(|f| f.as_mut().now_or_never()) {
                        asks[t].pop_front();
                        got[t] += 1;
                        held = Some(p);
                        late.push(t);
                    }
                }
                assert!(held.is_some(), "the permit went to one of them");
            }
            f64::from(got[1]) / f64::from(got[0] + got[1])
        };
        let (without, with) = (share(0), share(1));
        assert!((0.45..=0.55).contains(&without), "without: {without}");
        assert!((0.72..=0.78).contains(&with), "with one ahead: {with}");
    }

    /// Two tenants of weights 1 and 3 waiting with more requests than
    /// permits: over any stretch, about 25% and 75% of the permits.
    #[tokio::test]
    async fn waiting_tenants_share_by_weight_and_each_in_order() {
        use futures_util::FutureExt;
        let g = Gate::new("u", 1);
        let first = g.acquire("light", 1).now_or_never().expect("free");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..40 {
            for (tenant, weight) in [("light", 1), ("heavy", 3)] {
                let (g, tx) = (g.clone(), tx.clone());
                tokio::spawn(async move {
                    let p = g.acquire(tenant, weight).await;
                    let _ = tx.send((tenant, i, p));
                });
            }
            // Queued in this order.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(g.load(), 81);
        drop(first);
        let mut order = Vec::new();
        for _ in 0..40 {
            let (tenant, i, permit) = rx.recv().await.expect("a permit");
            order.push((tenant, i));
            drop(permit);
        }
        let heavy = order.iter().filter(|(t, _)| *t == "heavy").count();
        assert!((28..=32).contains(&heavy), "{heavy} of 40: {order:?}");
        let mut last = HashMap::new();
        for (t, i) in &order {
            assert!(
                last.insert(*t, *i).is_none_or(|before| before < *i),
                "in order within a tenant: {order:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_that_stops_waiting_gives_its_turn_on() {
        use futures_util::FutureExt;
        let g = Gate::new("u", 1);
        let held = g.acquire("a", 1).now_or_never().expect("free");
        let mut gone = Box::pin(g.acquire("b", 1));
        assert!(gone.as_mut().now_or_never().is_none());
        let next = tokio::spawn({
            let g = g.clone();
            async move { g.acquire("c", 1).await }
        });
        tokio::task::yield_now().await;
        drop(gone);
        drop(held);
        let p = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the permit went on")
            .expect("task");
        assert_eq!(g.load(), 1);
        drop(p);
        assert_eq!((g.load(), permits(&g)), (0, 1));
    }

    #[tokio::test]
    async fn a_cut_is_paid_by_permits_coming_back() {
        let g = Gate::new("u", 4);
        use futures_util::FutureExt;
        let held: Vec<GatePermit> = (0..4)
            .map(|_| g.acquire("t", 1).now_or_never().expect("a permit is free"))
            .collect();
        assert_eq!(permits(&g), 0);
        g.signal(Signal::Overloaded);
        assert_eq!(g.limit(), 3);
        drop(held);
        assert_eq!(permits(&g), 3, "the released permit paid the debt");
    }

    #[tokio::test]
    async fn the_ceiling_follows_the_engine_and_the_circuit_pauses() {
        let g = Gate::new("u", 64);
        assert!(g.set_ceiling(2, 64));
        assert_eq!((g.limit(), permits(&g)), (2, 2));
        let token = g.down_token();
        assert!(!g.unreachable(false), "one failure is not an outage");
        assert!(g.unreachable(false), "two in a row are");
        assert!(token.is_cancelled() && !g.is_up());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        assert!(!g.wait_up(deadline).await);
        g.signal(Signal::Answered(Duration::from_millis(10)));
        assert!(g.is_up());
        assert!(!g.down_token().is_cancelled());
    }
}
