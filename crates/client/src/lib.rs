//! A typed client for the Files and Batches API of OpenAI and the services
//! that copy it (Azure OpenAI, Groq, Together, Mistral, `batchkit serve`).
//!
//! It follows the official SDKs' conventions: `OPENAI_API_KEY` and
//! `OPENAI_BASE_URL` (Azure: `AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_KEY`,
//! `OPENAI_API_VERSION`), retries of 408/409/429/5xx and connection errors
//! with backoff, honouring `Retry-After` and `x-should-retry`, and uploads
//! streamed from disk.
//!
//! ```no_run
//! # async fn demo() -> Result<(), batchkit_client::ClientError> {
//! use batchkit_client::{Client, ClientConfig, CreateBatch, Provider};
//!
//! let cfg = ClientConfig::from_env(Provider::OpenAi, Some("http://127.0.0.1:8090/v1"), None)
//!     .expect("a configuration");
//! let client = Client::new(cfg)?;
//! let file = client.upload("requests.jsonl".as_ref(), "batch", None).await?;
//! let batch = client
//!     .create_batch(&CreateBatch {
//!         input_file_id: file.id,
//!         endpoint: "/v1/chat/completions".into(),
//!         completion_window: "24h".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{} is {}", batch.id, batch.status);
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod status;
mod types;

pub use client::{Client, Progress};
pub use config::{
    AZURE_API_VERSION, Auth, ClientConfig, ConfigError, DEFAULT_MAX_RETRIES, Provider,
    default_base_url, key_variable,
};
pub use error::ClientError;
pub use status::BatchStatus;
pub use types::{
    Batch, BatchErrorItem, BatchErrors, BatchUsage, CreateBatch, CreateBatchBody, ExpiresAfter,
    FileObject, InputTokensDetails, List, OutputTokensDetails, Page, RequestCounts,
};
