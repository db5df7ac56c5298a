//! Webhooks: a batch's end told to its tenant's URL as OpenAI tells it.
//!
//! The four events (`batch.completed`, `batch.failed`, `batch.cancelled`,
//! `batch.expired`) carry OpenAI's payload,
//! `{"object":"event","id":"evt_...","type":"batch.completed","created_at":UNIX,"data":{"id":"batch_..."}}`,
//! signed as the Standard Webhooks specification says (and as OpenAI's
//! SDKs verify with `client.webhooks.unwrap`): headers `webhook-id` (the
//! event's id, the same on every delivery of it), `webhook-timestamp`
//! (Unix seconds of this delivery) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under
//! the secret, the bytes that `whsec_` is followed by in base64).
//!
//! Delivery is at least once: each event waits in the store's outbox from
//! the moment its batch ends (in the same transaction), and leaves it only
//! when the receiver answered 2xx, or after [`SCHEDULE`] ran out (more
//! than a day). A receiver must therefore expect an event twice, and tell
//! them apart by `webhook-id`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::store::Event;

/// Where a tenant's events go, and the secret they are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The receiver.
    pub url: reqwest::Url,
    /// The decoded secret.
    key: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Webhook {
    /// A receiver at `url` with the secret `whsec_...`.
    pub fn new(url: &str, secret: &str) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| format!("webhook URL '{url}' is not an http(s) URL"))?;
        Ok(Webhook {
            url,
            key: parse_secret(secret)?,
        })
    }

    /// The headers of one delivery of `body` for event `id` at `timestamp`.
    pub fn headers(&self, id: &str, timestamp: i64, body: &str) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", sign(&self.key, id, timestamp, body)),
        ]
    }
}

/// The secret's bytes: `whsec_` and their base64 (Standard Webhooks
/// secrets are 24 to 64 bytes; fewer than 16 are refused as guessable).
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").ok_or_else(|| {
        "a webhook secret is whsec_ and base64 (`batchkit serve webhook-secret` makes one)"
            .to_owned()
    })?;
    let key = BASE64
        .decode(encoded)
        .map_err(|e| format!("the webhook secret after whsec_ is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!(
            "the webhook secret has {} bytes; use at least 16 (`batchkit serve webhook-secret` makes one of 32)",
            key.len()
        ));
    }
    Ok(key)
}

/// A new random secret of 32 bytes, `whsec_...`.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    crate::ids::fill_random(&mut bytes);
    format!("whsec_{}", BASE64.encode(bytes))
}

/// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The event's body, as OpenAI sends it.
pub fn payload(e: &Event) -> String {
    serde_json::json!({
        "object": "event",
        "id": e.id,
        "type": e.kind,
        "created_at": e.created_at,
        "data": {"id": e.batch_id},
    })
    .to_string()
}

/// The waits between deliveries of one event: the first at once, then
/// after each failure the next wait (Standard Webhooks' suggested
/// schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; 27.6 hours in all).
/// After the last, the event is given up and logged.
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example: secret, id,
    /// timestamp and body give this signature.
    #[test]
    fn the_specifications_example_signs_alike() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked_and_made() {
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        assert!(
            parse_secret("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("at least 16")
        );
        let made = new_secret();
        assert_eq!(parse_secret(&made).unwrap().len(), 32);
        assert_ne!(made, new_secret());
        assert!(Webhook::new("ftp://x", &made).is_err());
        let w = Webhook::new("http://127.0.0.1:9/hook", &made).unwrap();
        assert!(
            !format!("{w:?}").contains(&made[6..]),
            "the secret stays out of logs"
        );
    }

    #[test]
    fn the_payload_is_openais() {
        let e = Event {
            id: "evt_1".into(),
            tenant: "t".into(),
            batch_id: "batch_1".into(),
            kind: "batch.completed".into(),
            created_at: 1_750_000_000,
            attempts: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&payload(&e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"object": "event", "id": "evt_1", "type": "batch.completed",
                "created_at": 1_750_000_000, "data": {"id": "batch_1"}})
        );
    }
}
