//! Provider profiles: which endpoints, line shape, limits and model rule each
//! Batch API enforces. The facts and their sources are in
//! `shared/BATCH-FORMATS.md`; anything marked UNVERIFIED there is a default
//! the user can override with a flag.

use std::fmt;
use std::str::FromStr;

/// One MiB; the providers' "MB" limits are binary (OpenAI's 200 MB is
/// 209,715,200 bytes in its own error message).
const MIB: u64 = 1024 * 1024;

/// The services batchkit knows the rules of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI `/v1/batches`.
    OpenAi,
    /// Azure OpenAI global batch.
    Azure,
    /// Groq batch (chat completions only).
    Groq,
    /// Together AI batch (`{custom_id, body}` lines).
    Together,
    /// Mistral batch (`{custom_id, body}` lines, model set on the job).
    Mistral,
    /// vLLM `run-batch` (self-hosted; no size limits).
    Vllm,
}

/// How each request line is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineShape {
    /// `{custom_id, method, url, body}` (OpenAI and its copies).
    Full,
    /// `{custom_id, body}`: the endpoint is set on the job, not on the line.
    IdAndBody,
}

/// The limits one batch must fit in. `None` means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Most request lines in one batch.
    pub max_requests: Option<u64>,
    /// Largest input file, in bytes.
    pub max_bytes: Option<u64>,
    /// Most embedding inputs across all lines of an embeddings batch.
    pub max_embedding_inputs: Option<u64>,
}

/// Everything the validator needs to know about a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Which provider this describes.
    pub provider: Provider,
    /// Endpoints a batch may target.
    pub endpoints: &'static [&'static str],
    /// The line shape.
    pub shape: LineShape,
    /// Default limits.
    pub limits: Limits,
    /// Every line must name the same model.
    pub single_model: bool,
    /// `body.model` is required on every line.
    pub model_required: bool,
    /// Longest `custom_id` in characters, where the provider documents one.
    pub max_custom_id_chars: Option<usize>,
    /// Each line runs on its own (vLLM `run-batch`): a line's url picks its
    /// endpoint, so a file may mix endpoints, and what only fails that
    /// request (a url it does not serve, a repeated `custom_id`) or nothing
    /// at all (an empty file) is a warning, not a rejection.
    pub per_line: bool,
    /// The body is parsed against the endpoint's schema before anything runs
    /// (vLLM's line model), so a body the endpoint refuses fails the file;
    /// elsewhere (OpenAI's recorded replies) that request runs, fails with a
    /// 400 in the error file, and the rest of the batch completes.
    pub body_checked_upfront: bool,
}

const OPENAI_ENDPOINTS: &[&str] = &[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
];

/// Azure's batch guide writes the endpoint without the `/v1` prefix
/// (`/chat/completions`); its v1 API takes the OpenAI spelling too.
const AZURE_ENDPOINTS: &[&str] = &[
    "/chat/completions",
    "/embeddings",
    "/responses",
    "/completions",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
];

const GROQ_ENDPOINTS: &[&str] = &["/v1/chat/completions"];

const TOGETHER_ENDPOINTS: &[&str] = &["/v1/chat/completions", "/v1/completions"];

const MISTRAL_ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/fim/completions",
    "/v1/moderations",
    "/v1/chat/moderations",
];

/// What `vllm run-batch` serves (vllm `entrypoints/launchers/run_batch.py`
/// and its tests, 2026): chat completions, embeddings, score and rerank
/// (any url ending in `/score` or `/rerank`), transcriptions and
/// translations. Not `/v1/completions` or `/v1/responses`: a line with one of
/// those gets an error line.
const VLLM_ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
];

impl Provider {
    /// Every provider, in the order `--help` lists them.
    pub const ALL: [Provider; 6] = [
        Provider::OpenAi,
        Provider::Azure,
        Provider::Groq,
        Provider::Together,
        Provider::Mistral,
        Provider::Vllm,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Groq => "groq",
            Provider::Together => "together",
            Provider::Mistral => "mistral",
            Provider::Vllm => "vllm",
        }
    }

    /// The rules this provider enforces.
    pub fn profile(self) -> Profile {
        let limits = |requests, bytes, embeddings| Limits {
            max_requests: requests,
            max_bytes: bytes,
            max_embedding_inputs: embeddings,
        };
        match self {
            Provider::OpenAi => Profile {
                provider: self,
                endpoints: OPENAI_ENDPOINTS,
                shape: LineShape::Full,
                limits: limits(Some(50_000), Some(200 * MIB), Some(50_000)),
                single_model: true,
                model_required: true,
                max_custom_id_chars: None,
                per_line: false,
                body_checked_upfront: false,
            },
            Provider::Azure => Profile {
                provider: self,
                endpoints: AZURE_ENDPOINTS,
                shape: LineShape::Full,
                limits: limits(Some(100_000), Some(200 * MIB), None),
                single_model: true,
                model_required: true,
                max_custom_id_chars: None,
                per_line: false,
                body_checked_upfront: false,
            },
            Provider::Groq => Profile {
                provider: self,
                endpoints: GROQ_ENDPOINTS,
                shape: LineShape::Full,
                limits: limits(Some(50_000), Some(100 * MIB), None),
                single_model: false,
                model_required: true,
                max_custom_id_chars: None,
                per_line: false,
                body_checked_upfront: false,
            },
            Provider::Together => Profile {
                provider: self,
                endpoints: TOGETHER_ENDPOINTS,
                shape: LineShape::IdAndBody,
                limits: limits(Some(50_000), Some(100 * MIB), None),
                single_model: false,
                model_required: true,
                max_custom_id_chars: Some(64),
                per_line: false,
                body_checked_upfront: false,
            },
            Provider::Mistral => Profile {
                provider: self,
                endpoints: MISTRAL_ENDPOINTS,
                shape: LineShape::IdAndBody,
                limits: limits(Some(1_000_000), None, None),
                single_model: false,
                model_required: false,
                max_custom_id_chars: None,
                per_line: false,
                body_checked_upfront: false,
            },
            Provider::Vllm => Profile {
                provider: self,
                endpoints: VLLM_ENDPOINTS,
                shape: LineShape::Full,
                limits: Limits::default(),
                single_model: false,
                model_required: true,
                max_custom_id_chars: None,
                per_line: true,
                body_checked_upfront: true,
            },
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider name that batchkit does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider '{0}' (known: openai, azure, groq, together, mistral, vllm)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

impl Profile {
    /// Whether `endpoint` is one this provider accepts.
    pub fn supports(&self, endpoint: &str) -> bool {
        self.endpoints.contains(&endpoint)
    }

    /// The endpoint this provider serves that `endpoint` is most likely a
    /// typo of (at most two edits away), if it does not serve `endpoint`.
    pub fn near_miss(&self, endpoint: &str) -> Option<&'static str> {
        if self.supports(endpoint) {
            return None;
        }
        self.endpoints
            .iter()
            .map(|e| (edit_distance(e, endpoint), *e))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, e)| e)
    }

    /// The endpoint a `{custom_id, body}` batch uses when none is given.
    pub fn default_endpoint(&self) -> Option<&'static str> {
        match self.shape {
            LineShape::Full => None,
            LineShape::IdAndBody => self.endpoints.first().copied(),
        }
    }
}

/// What a request body must contain for an endpoint, judged from the path's
/// last segments so that Azure's `/chat/completions` and OpenAI's
/// `/v1/chat/completions` get the same checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    /// Chat completions: `messages` is required.
    Chat,
    /// Legacy completions (and Mistral FIM): `prompt` is required.
    Completions,
    /// Embeddings: `input` is required and counted against the input limit.
    Embeddings,
    /// Moderations: `input` is required; `model` is optional.
    Moderations,
    /// Responses: `input` is required.
    Responses,
    /// Anything else: no body checks beyond the envelope.
    Other,
}

impl EndpointKind {
    /// Classify an endpoint path.
    pub fn of(endpoint: &str) -> EndpointKind {
        let path = endpoint.strip_prefix("/v1").unwrap_or(endpoint);
        match path {
            "/chat/completions" => EndpointKind::Chat,
            "/completions" | "/fim/completions" => EndpointKind::Completions,
            "/embeddings" => EndpointKind::Embeddings,
            "/moderations" | "/chat/moderations" => EndpointKind::Moderations,
            "/responses" => EndpointKind::Responses,
            _ => EndpointKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.name().parse::<Provider>(), Ok(p));
        }
        assert!("anthropic".parse::<Provider>().is_err());
    }

    #[test]
    fn openai_limit_matches_the_services_own_message() {
        // "The batch input file is larger than the 209715200 maximum ..."
        assert_eq!(
            Provider::OpenAi.profile().limits.max_bytes,
            Some(209_715_200)
        );
    }

    #[test]
    fn endpoint_kinds() {
        assert_eq!(EndpointKind::of("/v1/chat/completions"), EndpointKind::Chat);
        assert_eq!(EndpointKind::of("/chat/completions"), EndpointKind::Chat);
        assert_eq!(EndpointKind::of("/v1/embeddings"), EndpointKind::Embeddings);
        assert_eq!(EndpointKind::of("/v1/score"), EndpointKind::Other);
    }
}

/// Levenshtein distance over bytes (endpoints are ASCII), stopping early
/// for strings of very different lengths.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 2 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod near_miss_tests {
    use super::*;

    #[test]
    fn near_misses() {
        let p = Provider::OpenAi.profile();
        assert_eq!(
            p.near_miss("/v1/chat/completion"),
            Some("/v1/chat/completions")
        );
        assert_eq!(p.near_miss("/v1/embedding"), Some("/v1/embeddings"));
        assert_eq!(p.near_miss("/v1/chat/completions"), None);
        assert_eq!(p.near_miss("/v2/something/else"), None);
    }
}
