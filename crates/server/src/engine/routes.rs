//! Which upstream a request goes to: `--upstream URL` serves any model,
//! `--upstream MODEL=URL` one model; several for the same model (or for
//! any) are replicas, and a request goes to the replica with the fewest
//! requests routed to it and not finished, preferring ones that are up.
//! Each replica has its own limit and circuit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::upstream::Upstream;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The replicas that serve one model (or any model).
struct Group {
    model: Option<String>,
    replicas: Vec<Upstream>,
    /// Where the search for the least loaded replica starts, turning, so
    /// that ties are spread.
    next: AtomicUsize,
}

/// Every upstream, by the model it serves.
pub struct Routes {
    groups: Vec<Group>,
}

/// What the upstreams say of a model.
pub enum Served {
    /// Some upstream serves it (or none can say).
    Yes,
    /// None does; these are the models they serve.
    No(Vec<String>),
}

impl Routes {
    /// The upstreams of `cfg`, sharing one HTTP client.
    pub fn new(cfg: &Arc<ServerConfig>, metrics: &Arc<Metrics>) -> Result<Routes, reqwest::Error> {
        let client = Upstream::client(cfg)?;
        let mut groups: Vec<Group> = Vec::new();
        for spec in &cfg.upstreams {
            let up = Upstream::new(&spec.url, client.clone(), cfg.clone(), metrics.clone());
            match groups.iter_mut().find(|g| g.model == spec.model) {
                Some(g) => g.replicas.push(up),
                None => groups.push(Group {
                    model: spec.model.clone(),
                    replicas: vec![up],
                    next: AtomicUsize::new(0),
                }),
            }
        }
        Ok(Routes { groups })
    }

    /// Every upstream.
    pub fn all(&self) -> impl Iterator<Item = &Upstream> {
        self.groups.iter().flat_map(|g| &g.replicas)
    }

    /// Whether requests need reading for their model to be routed: not
    /// when one group serves every model.
    pub fn by_model(&self) -> bool {
        !(self.groups.len() == 1 && self.groups[0].model.is_none())
    }

    fn group(&self, model: Option<&str>) -> Option<&Group> {
        model
            .and_then(|m| self.groups.iter().find(|g| g.model.as_deref() == Some(m)))
            .or_else(|| self.groups.iter().find(|g| g.model.is_none()))
    }

    /// The upstream for a request of `model`: its group's replica that is
    /// up and has the least load; `None` if no upstream serves it.
    pub fn pick(&self, model: Option<&str>) -> Option<&Upstream> {
        let g = self.group(model)?;
        let n = g.replicas.len();
        let start = g.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &g.replicas[(start + i) % n])
            .min_by_key(|u| (!u.gate().is_up(), u.gate().load()))
    }

    /// Whether a replica other than `current` that serves `model` is up.
    pub fn other_up(&self, model: Option<&str>, current: &Upstream) -> bool {
        self.group(model).is_some_and(|g| {
            g.replicas
                .iter()
                .any(|u| !Arc::ptr_eq(u.gate(), current.gate()) && u.gate().is_up())
        })
    }

    /// Whether some upstream serves `model`: one named for it does; else
    /// the upstreams for any model are asked (`GET /v1/models`, cached for
    /// `max_age`), and one that cannot say counts as serving it.
    pub async fn serves(&self, model: &str, max_age: Duration) -> Served {
        if self
            .groups
            .iter()
            .any(|g| g.model.as_deref() == Some(model))
        {
            return Served::Yes;
        }
        let named: Vec<String> = self.groups.iter().filter_map(|g| g.model.clone()).collect();
        let Some(any) = self.groups.iter().find(|g| g.model.is_none()) else {
            return Served::No(named);
        };
        let mut listed: HashSet<String> = named.into_iter().collect();
        for up in &any.replicas {
            match up.models(max_age).await {
                None => return Served::Yes,
                Some(models) if models.contains(model) => return Served::Yes,
                Some(models) => listed.extend(models.iter().cloned()),
            }
        }
        let mut listed: Vec<String> = listed.into_iter().collect();
        listed.sort_unstable();
        Served::No(listed)
    }

    /// Read what each engine says of its capacity.
    pub async fn read_capacity(&self) {
        for up in self.all() {
            up.read_capacity().await;
        }
    }

    /// Each upstream's state, for `GET /health`.
    pub fn state(&self) -> serde_json::Value {
        let groups = self.groups.iter().flat_map(|g| {
            g.replicas.iter().map(move |u| {
                let gate = u.gate();
                serde_json::json!({
                    "url": gate.name(),
                    "model": g.model,
                    "up": gate.is_up(),
                    "down_for_seconds": gate.down_since().map(|t| t.elapsed().as_secs()),
                    "concurrency_limit": gate.limit(),
                    "concurrency_ceiling": gate.ceiling(),
                    "load": gate.load(),
                })
            })
        });
        serde_json::Value::Array(groups.collect())
    }
}
