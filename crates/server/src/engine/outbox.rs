//! Delivering the webhook outbox: every node looks for due events each
//! second, holds the ones it takes (another node takes them over if it
//! dies mid-delivery), and posts each to its tenant's receiver, signed.
//! A delivery never holds up a batch: the batch ended before its event was
//! written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Engine;
use crate::ids;
use crate::store::Event;
use crate::webhooks::{SCHEDULE, payload};

/// How often the outbox is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long a taken event is this node's: longer than a delivery.
const HOLD: Duration = Duration::from_secs(60);
/// Deliveries at once.
const AT_ONCE: usize = 16;

impl Engine {
    /// Deliver due webhook events until shutdown.
    pub(super) async fn deliver_events(self: Arc<Self>) {
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "batchkit/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("webhooks cannot be sent: no HTTP client ({e})");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(AT_ONCE));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let due = match self.store.due_events(ids::now_ms(), HOLD, free).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!("cannot read the webhook outbox: {e}");
                    continue;
                }
            };
            for event in due {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (engine, client) = (self.clone(), client.clone());
                self.tasks.spawn(async move {
                    tokio::select! {
                        // Left held: delivered again after the hold.
                        _ = engine.shutdown.cancelled() => {}
                        _ = engine.deliver(&client, &event) => {}
                    }
                    drop(permit);
                });
            }
        }
    }

    /// One delivery of `event`: out of the outbox on a 2xx (or when its
    /// tenant has no receiver), due again later otherwise, given up when
    /// the schedule has run out.
    async fn deliver(&self, client: &reqwest::Client, event: &Event) {
        let hook = self
            .tenants
            .now()
            .get(&event.tenant)
            .and_then(|t| t.webhook.clone())
            .or_else(|| self.cfg.webhook.clone());
        let Some(hook) = hook else {
            // Nobody to tell.
            self.outbox_done(event).await;
            return;
        };
        let body = payload(event);
        let mut request = client
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in hook.headers(&event.id, ids::now(), &body) {
            request = request.header(name, value);
        }
        let outcome = match request.body(body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the receiver answered {}", r.status())),
            Err(e) if e.is_timeout() => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
            Err(e) if e.is_connect() => Err("the receiver cannot be reached".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let attempts = event.attempts + 1;
        match outcome {
            Ok(()) => {
                self.metrics.webhook(true);
                tracing::info!(event = %event.id, batch = %event.batch_id, kind = %event.kind, attempts, "webhook delivered");
                self.outbox_done(event).await;
            }
            Err(why) => {
                self.metrics.webhook(false);
                match SCHEDULE.get(event.attempts as usize) {
                    Some(wait) => {
                        tracing::warn!(
                            event = %event.id, batch = %event.batch_id, url = %hook.url, attempts,
                            "webhook not delivered ({why}); trying again in {}s", wait.as_secs()
                        );
                        let next = ids::now_ms().saturating_add(wait.as_millis() as i64);
                        if let Err(e) = self.store.event_retry(event, next, &why).await {
                            tracing::warn!(event = %event.id, "cannot reschedule the webhook: {e}");
                        }
                    }
                    None => {
                        tracing::error!(
                            event = %event.id, batch = %event.batch_id, url = %hook.url, attempts,
                            "webhook given up after {attempts} deliveries over more than a day ({why})"
                        );
                        self.outbox_done(event).await;
                    }
                }
            }
        }
    }

    async fn outbox_done(&self, event: &Event) {
        if let Err(e) = self.store.event_done(&event.id).await {
            // Still held: it comes due again, and is sent again (at least once).
            tracing::warn!(event = %event.id, "cannot take the webhook out of the outbox: {e}");
        }
    }
}
