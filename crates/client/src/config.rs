//! Where the client sends requests and how it signs them, by provider and
//! from the environment, as the official SDKs read it.

use std::time::Duration;

pub use batchkit_core::Provider;

/// The default base URL of `provider` (Azure has none: it is the
/// resource's; vLLM has no Batch API of its own, so it is the address of the
/// `batchkit serve` in front of it).
pub fn default_base_url(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::OpenAi => Some("https://api.openai.com/v1"),
        Provider::Groq => Some("https://api.groq.com/openai/v1"),
        Provider::Together => Some("https://api.together.xyz/v1"),
        Provider::Mistral => Some("https://api.mistral.ai/v1"),
        Provider::Azure | Provider::Vllm => None,
    }
}

/// The environment variable that holds `provider`'s API key, as its SDK
/// reads it.
pub fn key_variable(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi | Provider::Vllm => "OPENAI_API_KEY",
        Provider::Azure => "AZURE_OPENAI_API_KEY",
        Provider::Groq => "GROQ_API_KEY",
        Provider::Together => "TOGETHER_API_KEY",
        Provider::Mistral => "MISTRAL_API_KEY",
    }
}

/// Retries of a call after 408/409/429/5xx, a timeout or a connection
/// error, in the client and in `serve` (towards its upstream) alike. Five,
/// not the SDKs' two: batch work runs for hours against servers under
/// load, where a failed call costs a failed request (`serve`) or a stopped
/// command (`run`, `batches wait`); five retries with exponential backoff
/// from 500 ms, at least `Retry-After`, ride out about 15 s of outage.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// The Azure OpenAI API version used when `OPENAI_API_VERSION` is unset.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// How requests are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer KEY`.
    Bearer(String),
    /// Azure's `api-key: KEY`.
    ApiKey(String),
    /// Nothing (a local `batchkit serve` without keys).
    None,
}

/// Everything the client needs to reach a service.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The provider, for its conventions.
    pub provider: Provider,
    /// Base URL including the version path (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Credentials.
    pub auth: Auth,
    /// Added to every request's query (Azure's `api-version`).
    pub api_version: Option<String>,
    /// Retries after 408/409/429/5xx and connection errors.
    pub max_retries: u32,
    /// The first retry's delay (doubled each time, with jitter).
    pub retry_base_delay: Duration,
    /// How long one request may take (uploads and downloads: per request).
    pub timeout: Duration,
}

/// Why a configuration could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Azure without an endpoint.
    #[error(
        "no Azure OpenAI endpoint: set AZURE_OPENAI_ENDPOINT (https://RESOURCE.openai.azure.com) or pass --base-url"
    )]
    NoAzureEndpoint,
    /// vLLM without an address.
    #[error(
        "vLLM has no Batch API of its own: set OPENAI_BASE_URL or pass --base-url with the address of the `batchkit serve` in front of it (http://HOST:8090/v1)"
    )]
    NoVllmServer,
}

impl ClientConfig {
    /// The configuration for `provider`, with `base_url` and `api_key` from
    /// the arguments where given, else from the environment as the official
    /// SDKs read it (`OPENAI_BASE_URL`, `OPENAI_API_KEY`;
    /// `AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_KEY`, `OPENAI_API_VERSION`;
    /// `GROQ_API_KEY`, ...).
    pub fn from_env(
        provider: Provider,
        base_url: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<ClientConfig, ConfigError> {
        ClientConfig::resolve(provider, base_url, api_key, |k| std::env::var(k).ok())
    }

    /// As [`ClientConfig::from_env`], reading variables with `var`.
    pub fn resolve(
        provider: Provider,
        base_url: Option<&str>,
        api_key: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, ConfigError> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty());
        let key = api_key
            .map(str::to_owned)
            .or_else(|| env(key_variable(provider)));
        let (base_url, auth, api_version) = match provider {
            Provider::Azure => {
                let endpoint = base_url
                    .map(str::to_owned)
                    .or_else(|| env("AZURE_OPENAI_ENDPOINT"))
                    .ok_or(ConfigError::NoAzureEndpoint)?;
                let endpoint = endpoint.trim_end_matches('/');
                let base = if endpoint.ends_with("/openai") {
                    endpoint.to_owned()
                } else {
                    format!("{endpoint}/openai")
                };
                let version = env("OPENAI_API_VERSION").unwrap_or_else(|| AZURE_API_VERSION.into());
                (base, key.map_or(Auth::None, Auth::ApiKey), Some(version))
            }
            Provider::OpenAi | Provider::Vllm => {
                let base = base_url
                    .map(str::to_owned)
                    .or_else(|| env("OPENAI_BASE_URL"))
                    .or_else(|| default_base_url(provider).map(str::to_owned))
                    .ok_or(ConfigError::NoVllmServer)?;
                (base, key.map_or(Auth::None, Auth::Bearer), None)
            }
            other => {
                let base = base_url
                    .map(str::to_owned)
                    .unwrap_or_else(|| default_base_url(other).unwrap_or_default().to_owned());
                (base, key.map_or(Auth::None, Auth::Bearer), None)
            }
        };
        Ok(ClientConfig {
            provider,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            api_version,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_base_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn openai_reads_the_sdk_variables() {
        let c = ClientConfig::resolve(Provider::OpenAi, None, None, vars(&[])).unwrap();
        assert_eq!(
            (c.base_url.as_str(), &c.auth),
            ("https://api.openai.com/v1", &Auth::None)
        );
        let env = vars(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:8090/v1/"),
            ("OPENAI_API_KEY", "sk-1"),
        ]);
        let c = ClientConfig::resolve(Provider::OpenAi, None, None, env).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:8090/v1");
        assert_eq!(c.auth, Auth::Bearer("sk-1".into()));
        let env = vars(&[("OPENAI_API_KEY", "sk-1")]);
        let c = ClientConfig::resolve(Provider::OpenAi, Some("http://h/v1"), Some("sk-2"), env)
            .unwrap();
        assert_eq!(
            (c.base_url.as_str(), c.auth),
            ("http://h/v1", Auth::Bearer("sk-2".into()))
        );
    }

    #[test]
    fn azure_uses_its_endpoint_key_header_and_version() {
        assert_eq!(
            ClientConfig::resolve(Provider::Azure, None, None, vars(&[])).unwrap_err(),
            ConfigError::NoAzureEndpoint
        );
        let env = vars(&[
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/"),
            ("AZURE_OPENAI_API_KEY", "az"),
        ]);
        let c = ClientConfig::resolve(Provider::Azure, None, None, env).unwrap();
        assert_eq!(c.base_url, "https://res.openai.azure.com/openai");
        assert_eq!(c.auth, Auth::ApiKey("az".into()));
        assert_eq!(c.api_version.as_deref(), Some(AZURE_API_VERSION));
    }

    #[test]
    fn other_services_have_their_addresses_and_keys() {
        let env = vars(&[("GROQ_API_KEY", "g")]);
        let c = ClientConfig::resolve(Provider::Groq, None, None, env).unwrap();
        assert_eq!(c.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(c.auth, Auth::Bearer("g".into()));
        let env = vars(&[("OPENAI_API_KEY", "k")]);
        assert_eq!(
            ClientConfig::resolve(Provider::Vllm, None, None, &env).unwrap_err(),
            ConfigError::NoVllmServer
        );
        let c = ClientConfig::resolve(Provider::Vllm, Some("http://h:8090/v1"), None, &env);
        assert_eq!(c.unwrap().auth, Auth::Bearer("k".into()));
    }
}
