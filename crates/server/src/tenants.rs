//! Tenants: who may call the API, and with what weight and limits. From
//! `--api-key` (a tenant per key, weight 1) and from `--tenants FILE`
//! (TOML), which is read again on SIGHUP and when it changes; a broken file
//! is reported and the tenants before it are kept.
//!
//! ```toml
//! [[tenant]]
//! name = "acme"
//! keys = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! weight = 3                 # share of the upstreams against the others
//! max_batches = 20           # unfinished batches at once
//! enqueued_tokens = 5_000_000                       # across its models
//! enqueued_tokens_per_model = { "llama-3.1-8b" = 2_000_000 }
//! webhook_url = "https://acme.example/hooks/batch"  # batch.completed, ...
//! webhook_secret = "whsec_..."   # `batchkit serve webhook-secret` makes one
//! ```
//!
//! Keys are stored as SHA-256 hashes (`batchkit serve hash-key` prints
//! one), so the file holds no secret that lets anyone in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::store::TokenLimit;
use crate::webhooks::Webhook;

/// One tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its name: the owner of its files and batches.
    pub name: String,
    /// Its share of the upstreams against the other tenants with work.
    pub weight: u32,
    /// The most unfinished batches it may have at once.
    pub max_batches: Option<u64>,
    /// The most tokens its `in_progress` batches may hold at once, across
    /// its models.
    pub enqueued_tokens: Option<u64>,
    /// The same, per model.
    pub enqueued_tokens_per_model: BTreeMap<String, u64>,
    /// Where its batches' ends are told, if anywhere (else the server's
    /// `--webhook-url`).
    pub webhook: Option<Webhook>,
}

impl Tenant {
    /// A tenant of this name with weight 1 and no limits.
    pub fn named(name: String) -> Tenant {
        Tenant {
            name,
            weight: 1,
            max_batches: None,
            enqueued_tokens: None,
            enqueued_tokens_per_model: BTreeMap::new(),
            webhook: None,
        }
    }

    /// The enqueued-token limits a batch of `model` must fit into.
    pub fn token_limits(&self, model: Option<&str>) -> Vec<TokenLimit> {
        let overall = self
            .enqueued_tokens
            .map(|limit| TokenLimit { model: None, limit });
        let per_model = model.and_then(|m| {
            let limit = *self.enqueued_tokens_per_model.get(m)?;
            Some(TokenLimit {
                model: Some(m.to_owned()),
                limit,
            })
        });
        per_model.into_iter().chain(overall).collect()
    }
}

/// The tenants file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "tenant")]
    tenants: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    keys: Vec<String>,
    #[serde(default = "one")]
    weight: u32,
    max_batches: Option<u64>,
    enqueued_tokens: Option<u64>,
    #[serde(default)]
    enqueued_tokens_per_model: BTreeMap<String, u64>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
}

fn one() -> u32 {
    1
}

/// The largest weight (a thousand times another's is share enough).
pub const MAX_WEIGHT: u32 = 1000;

/// `sha256:` and the hex SHA-256 of an API key, as the tenants file holds
/// keys.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The tenant of an `--api-key`: a digest, so the key itself is never
/// stored.
pub fn tenant_of(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("key_{hex}")
}

/// Every tenant, by the hash of each of its keys.
#[derive(Debug, Default)]
pub struct Tenants {
    by_key: HashMap<String, Arc<Tenant>>,
    by_name: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    /// The tenants of `--api-key` keys and of a tenants file's text.
    pub fn new(keys: &[String], file: Option<&str>) -> Result<Tenants, String> {
        let mut t = Tenants::default();
        for key in keys {
            let tenant = Arc::new(Tenant::named(tenant_of(key)));
            t.by_name.insert(tenant.name.clone(), tenant.clone());
            t.by_key.insert(hash_key(key), tenant);
        }
        let Some(text) = file else { return Ok(t) };
        let parsed: File = toml::from_str(text).map_err(|e| e.to_string())?;
        for e in parsed.tenants {
            let bad = |why: String| Err(format!("tenant '{}': {why}", e.name));
            if e.name.is_empty()
                || e.name.len() > 64
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return bad("a name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".to_owned());
            }
            if e.name.starts_with("key_") || e.name == crate::http::OPEN_TENANT {
                return bad(
                    "the name is reserved (key_... names the tenants of --api-key)".to_owned(),
                );
            }
            if !(1..=MAX_WEIGHT).contains(&e.weight) {
                return bad(format!("weight {} is not from 1 to {MAX_WEIGHT}", e.weight));
            }
            if e.keys.is_empty() {
                return bad("no keys: nobody could call as this tenant".to_owned());
            }
            if e.enqueued_tokens == Some(0) || e.enqueued_tokens_per_model.values().any(|&n| n == 0)
            {
                return bad(
                    "an enqueued-token limit of 0 would fail every batch; leave it out for none"
                        .to_owned(),
                );
            }
            let webhook = match (&e.webhook_url, &e.webhook_secret) {
                (None, None) => None,
                (Some(url), Some(secret)) => match Webhook::new(url, secret) {
                    Ok(w) => Some(w),
                    Err(why) => return bad(why),
                },
                _ => return bad("webhook_url and webhook_secret go together".to_owned()),
            };
            let tenant = Arc::new(Tenant {
                name: e.name.clone(),
                weight: e.weight,
                max_batches: e.max_batches,
                enqueued_tokens: e.enqueued_tokens,
                enqueued_tokens_per_model: e.enqueued_tokens_per_model,
                webhook,
            });
            if t.by_name.insert(e.name.clone(), tenant.clone()).is_some() {
                return bad("the name is used twice".to_owned());
            }
            for key in &e.keys {
                let hex = key.strip_prefix("sha256:").unwrap_or_default();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return bad(format!(
                        "'{key}' is not sha256:<64 hex digits> (`batchkit serve hash-key` prints one)"
                    ));
                }
                let key = format!("sha256:{}", hex.to_ascii_lowercase());
                if let Some(other) = t.by_key.insert(key, tenant.clone()) {
                    return bad(format!("a key is also '{}'s", other.name));
                }
            }
        }
        Ok(t)
    }

    /// The tenant calling with `key`.
    pub fn by_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_key.get(&hash_key(key))
    }

    /// A tenant by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    /// No key at all: the API is open (on loopback only, unless told).
    pub fn is_open(&self) -> bool {
        self.by_key.is_empty()
    }

    /// How many tenants.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The tenants in force, replaced whole by a reload.
#[derive(Debug, Default)]
pub struct TenantsCell(RwLock<Arc<Tenants>>);

impl TenantsCell {
    /// Holding `t`.
    pub fn new(t: Tenants) -> TenantsCell {
        TenantsCell(RwLock::new(Arc::new(t)))
    }

    /// The tenants now.
    pub fn now(&self) -> Arc<Tenants> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put `t` in force.
    pub fn replace(&self, t: Tenants) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
    }

    /// Read the tenants file again: the new tenants, or (the file broken)
    /// the old ones kept and the problem logged.
    pub fn reload(&self, keys: &[String], path: &Path) {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Tenants::new(keys, Some(&text)))
        {
            Ok(t) => {
                tracing::info!(file = %path.display(), tenants = t.len(), "tenants read");
                self.replace(t);
            }
            Err(e) => tracing::error!(
                file = %path.display(),
                "the tenants file cannot be used ({e}); the tenants before it stay in force"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[tenant]]
name = "acme"
keys = ["KEY_A"]
weight = 3
max_batches = 2
enqueued_tokens = 1_000
enqueued_tokens_per_model = { "m" = 500 }

[[tenant]]
name = "globex"
keys = ["KEY_B"]
"#;

    fn file() -> String {
        FILE.replace("KEY_A", &hash_key("sk-a"))
            .replace("KEY_B", &hash_key("sk-b"))
    }

    #[test]
    fn keys_find_their_tenant_by_hash() {
        let t = Tenants::new(&["sk-cli".to_owned()], Some(&file())).unwrap();
        let acme = t.by_key("sk-a").unwrap();
        assert_eq!(
            (acme.name.as_str(), acme.weight, acme.max_batches),
            ("acme", 3, Some(2))
        );
        assert_eq!(
            acme.token_limits(Some("m")),
            [
                TokenLimit {
                    model: Some("m".into()),
                    limit: 500
                },
                TokenLimit {
                    model: None,
                    limit: 1000
                }
            ]
        );
        assert_eq!(acme.token_limits(Some("other")).len(), 1);
        assert_eq!(t.by_key("sk-b").unwrap().weight, 1, "weight defaults to 1");
        assert!(t.by_key("sk-b").unwrap().token_limits(Some("m")).is_empty());
        assert_eq!(t.by_key("sk-cli").unwrap().name, tenant_of("sk-cli"));
        assert!(t.by_key("sk-nope").is_none());
        assert_eq!(t.len(), 3);
        assert!(!t.is_open());
        assert!(Tenants::new(&[], None).unwrap().is_open());
    }

    #[test]
    fn a_broken_file_says_what_is_wrong() {
        let cases = [
            (file().replace("weight = 3", "weight = 0"), "weight 0"),
            (file().replace("\"globex\"", "\"acme\""), "used twice"),
            (
                file().replace(&hash_key("sk-b"), "plain-key"),
                "sha256:<64 hex digits>",
            ),
            (
                file().replace(&hash_key("sk-b"), &hash_key("sk-a")),
                "also 'acme's",
            ),
            (
                file().replace("max_batches", "max_batchez"),
                "unknown field",
            ),
            (file().replace("\"acme\"", "\"a b\""), "a name is"),
            (
                file().replace("weight = 3", "weight = 3\nwebhook_url = \"http://x/\""),
                "go together",
            ),
            (
                file().replace(
                    "weight = 3",
                    "weight = 3\nwebhook_url = \"http://x/\"\nwebhook_secret = \"plain\"",
                ),
                "whsec_",
            ),
            (
                file().replace("enqueued_tokens = 1_000", "enqueued_tokens = 0"),
                "limit of 0",
            ),
            (
                file().replace("enqueued_tokens = 1_000", "enqueued_tokens = -1"),
                "",
            ),
            (
                "[[tenant]]\nname = \"x\"\nkeys = []\n".to_owned(),
                "no keys",
            ),
            ("not toml at all".to_owned(), ""),
        ];
        for (text, want) in cases {
            let e = Tenants::new(&[], Some(&text)).expect_err(&text);
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_reload_keeps_the_old_tenants_when_the_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, file()).unwrap();
        let cell = TenantsCell::default();
        cell.reload(&[], &path);
        assert!(cell.now().by_key("sk-a").is_some());
        std::fs::write(&path, "[[tenant]]\nbroken").unwrap();
        cell.reload(&[], &path);
        assert!(cell.now().by_key("sk-a").is_some(), "kept");
        std::fs::write(&path, file().replace(&hash_key("sk-a"), &hash_key("sk-c"))).unwrap();
        cell.reload(&[], &path);
        assert!(cell.now().by_key("sk-a").is_none() && cell.now().by_key("sk-c").is_some());
    }
}
