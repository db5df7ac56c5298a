//! Where the client sends requests and how it signs them, by provider and
//! from the environment, as the official SDKs read it.

use std::time::Duration;

/// The services the client knows the addresses and conventions of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// OpenAI, or anything at `OPENAI_BASE_URL` (`batchkit serve`, ...).
    OpenAi,
    /// Azure OpenAI: `AZURE_OPENAI_ENDPOINT`, an `api-key` header and an
    /// `api-version` query parameter.
    Azure,
    /// Groq's OpenAI-compatible API.
    Groq,
    /// Together AI.
    Together,
    /// Mistral.
    Mistral,
}

impl Service {
    /// Every service, for help texts.
    pub const ALL: [Service; 5] = [
        Service::OpenAi,
        Service::Azure,
        Service::Groq,
        Service::Together,
        Service::Mistral,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::OpenAi => "openai",
            Service::Azure => "azure",
            Service::Groq => "groq",
            Service::Together => "together",
            Service::Mistral => "mistral",
        }
    }

    /// The service called `name`.
    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The default base URL (Azure has none: it is the resource's).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Service::OpenAi => Some("https://api.openai.com/v1"),
            Service::Azure => None,
            Service::Groq => Some("https://api.groq.com/openai/v1"),
            Service::Together => Some("https://api.together.xyz/v1"),
            Service::Mistral => Some("https://api.mistral.ai/v1"),
        }
    }

    /// The environment variable that holds the API key.
    pub fn key_variable(self) -> &'static str {
        match self {
            Service::OpenAi => "OPENAI_API_KEY",
            Service::Azure => "AZURE_OPENAI_API_KEY",
            Service::Groq => "GROQ_API_KEY",
            Service::Together => "TOGETHER_API_KEY",
            Service::Mistral => "MISTRAL_API_KEY",
        }
    }
}

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
    /// The service, for its conventions.
    pub service: Service,
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
}

impl ClientConfig {
    /// The configuration for `service`, with `base_url` and `api_key` from
    /// the arguments where given, else from the environment as the official
    /// SDKs read it (`OPENAI_BASE_URL`, `OPENAI_API_KEY`;
    /// `AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_KEY`, `OPENAI_API_VERSION`;
    /// `GROQ_API_KEY`, ...).
    pub fn from_env(
        service: Service,
        base_url: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<ClientConfig, ConfigError> {
        ClientConfig::resolve(service, base_url, api_key, |k| std::env::var(k).ok())
    }

    /// As [`ClientConfig::from_env`], reading variables with `var`.
    pub fn resolve(
        service: Service,
        base_url: Option<&str>,
        api_key: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, ConfigError> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty());
        let key = api_key
            .map(str::to_owned)
            .or_else(|| env(service.key_variable()));
        let (base_url, auth, api_version) = match service {
            Service::Azure => {
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
            Service::OpenAi => {
                let base = base_url
                    .map(str::to_owned)
                    .or_else(|| env("OPENAI_BASE_URL"))
                    .unwrap_or_else(|| "https://api.openai.com/v1".into());
                (base, key.map_or(Auth::None, Auth::Bearer), None)
            }
            other => {
                let base = base_url
                    .map(str::to_owned)
                    .unwrap_or_else(|| other.default_base_url().unwrap_or_default().to_owned());
                (base, key.map_or(Auth::None, Auth::Bearer), None)
            }
        };
        Ok(ClientConfig {
            service,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            api_version,
            max_retries: 2,
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
        let c = ClientConfig::resolve(Service::OpenAi, None, None, vars(&[])).unwrap();
        assert_eq!(
            (c.base_url.as_str(), &c.auth),
            ("https://api.openai.com/v1", &Auth::None)
        );
        let env = vars(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:8090/v1/"),
            ("OPENAI_API_KEY", "sk-1"),
        ]);
        let c = ClientConfig::resolve(Service::OpenAi, None, None, env).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:8090/v1");
        assert_eq!(c.auth, Auth::Bearer("sk-1".into()));
        let env = vars(&[("OPENAI_API_KEY", "sk-1")]);
        let c =
            ClientConfig::resolve(Service::OpenAi, Some("http://h/v1"), Some("sk-2"), env).unwrap();
        assert_eq!(
            (c.base_url.as_str(), c.auth),
            ("http://h/v1", Auth::Bearer("sk-2".into()))
        );
    }

    #[test]
    fn azure_uses_its_endpoint_key_header_and_version() {
        assert_eq!(
            ClientConfig::resolve(Service::Azure, None, None, vars(&[])).unwrap_err(),
            ConfigError::NoAzureEndpoint
        );
        let env = vars(&[
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/"),
            ("AZURE_OPENAI_API_KEY", "az"),
        ]);
        let c = ClientConfig::resolve(Service::Azure, None, None, env).unwrap();
        assert_eq!(c.base_url, "https://res.openai.azure.com/openai");
        assert_eq!(c.auth, Auth::ApiKey("az".into()));
        assert_eq!(c.api_version.as_deref(), Some(AZURE_API_VERSION));
    }

    #[test]
    fn other_services_have_their_addresses_and_keys() {
        let env = vars(&[("GROQ_API_KEY", "g")]);
        let c = ClientConfig::resolve(Service::Groq, None, None, env).unwrap();
        assert_eq!(c.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(c.auth, Auth::Bearer("g".into()));
        for s in Service::ALL {
            assert_eq!(Service::parse(s.name()), Some(s));
        }
    }
}
