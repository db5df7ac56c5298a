//! The file store in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph,
//! ...), through Apache Arrow's `object_store`: `s3://BUCKET[/PREFIX]`,
//! configured as the AWS tools are (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and
//! `AWS_ALLOW_HTTP=true` for a plain-http endpoint).
//!
//! - A file is `PREFIX/files/<id>`.
//! - Writes stream: up to one part is buffered, then the file goes up as a
//!   multipart upload in parts of [`PART_SIZE`] (S3 wants at least 5 MiB,
//!   and at most 10,000 parts: files of up to 80 GB), at most
//!   [`PARTS_IN_FLIGHT`] at a time; a small file is one plain `PUT`. A
//!   writer dropped before its commit aborts its upload.
//! - Reads stream a whole object or a byte range (`Range` requests).
//! - Correctness never rests on the bucket: nothing relies on conditional
//!   writes (which some S3-compatible servers ignore). Files are written
//!   once under fresh ids, and which ones count is decided in the job
//!   store, under its fencing.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

use super::{FileStore, FileWriter, Reader, Stored};

/// The size of each part of a multipart upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one file being uploaded at once: with the part being filled,
/// a writer holds at most three parts (24 MiB) in memory.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Files in an S3-compatible bucket.
pub struct S3Files {
    store: Arc<dyn ObjectStore>,
    /// `PREFIX/files`, or `files`.
    dir: String,
}

fn to_io(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

impl S3Files {
    /// The bucket (and prefix) of `url` (`s3://BUCKET[/PREFIX]`), with the
    /// settings of the environment (`AWS_*`) and then `settings` (keys as
    /// `object_store` names them: `aws_endpoint`, `aws_access_key_id`,
    /// ...).
    pub fn open(url: &str, settings: &[(&str, &str)]) -> io::Result<S3Files> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(format!("'{url}' is not an s3://BUCKET[/PREFIX] URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(format!("'{url}' names no bucket")));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in settings {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| invalid(format!("S3 setting '{key}': {e}")))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder.build().map_err(|e| invalid(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        Ok(S3Files {
            store: Arc::new(store),
            dir: if prefix.is_empty() {
                "files".to_owned()
            } else {
                format!("{prefix}/files")
            },
        })
    }

    fn path(&self, id: &str) -> io::Result<Path> {
        Ok(Path::from(format!(
            "{}/{}",
            self.dir,
            super::checked_id(id)?
        )))
    }
}

/// A file going up as a multipart upload (or one `PUT`, if small).
struct S3Writer {
    writer: Option<BufWriter>,
}

#[async_trait::async_trait]
impl FileWriter for S3Writer {
    async fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        match &mut self.writer {
            Some(w) => w.put(bytes).await.map_err(to_io),
            None => Err(io::Error::other("the upload was ended")),
        }
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        match self.writer.take() {
            Some(mut w) => w.shutdown().await,
            None => Err(io::Error::other("the upload was ended")),
        }
    }
}

impl Drop for S3Writer {
    /// An upload not committed is aborted, so that its parts do not stay
    /// in the bucket.
    fn drop(&mut self) {
        if let (Some(mut w), Ok(rt)) = (self.writer.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                if let Err(e) = w.abort().await {
                    tracing::warn!("cannot abort an unfinished upload: {e}");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl FileStore for S3Files {
    async fn create(&self, id: &str) -> io::Result<Box<dyn FileWriter>> {
        let writer = BufWriter::with_capacity(self.store.clone(), self.path(id)?, PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(S3Writer {
            writer: Some(writer),
        }))
    }

    async fn read(&self, id: &str, range: Option<Range<u64>>) -> io::Result<Reader> {
        let path = self.path(id)?;
        let empty = || -> Reader { Box::pin(tokio::io::empty()) };
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            // S3 has no empty range; the object must still exist.
            self.store.head(&path).await.map_err(to_io)?;
            return Ok(empty());
        }
        let opts = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, opts).await {
            Ok(got) => {
                let stream = got.into_stream().map_err(to_io).boxed();
                Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
            }
            Err(e @ object_store::Error::NotFound { .. }) => Err(to_io(e)),
            // A range that starts past the end reads nothing, as a file's
            // would; S3 refuses it (416), so the size is asked for.
            Err(e) => match range {
                Some(r) => {
                    let size = self.store.head(&path).await.map_err(to_io)?.size;
                    if r.start >= size {
                        Ok(empty())
                    } else {
                        Err(to_io(e))
                    }
                }
                None => Err(to_io(e)),
            },
        }
    }

    async fn remove(&self, id: &str) -> io::Result<()> {
        match self.store.delete(&self.path(id)?).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            r => r.map_err(to_io),
        }
    }

    async fn stored(&self) -> io::Result<Vec<Stored>> {
        let dir = Path::from(self.dir.as_str());
        let mut listed = self.store.list(Some(&dir));
        let mut stored = Vec::new();
        while let Some(meta) = listed.try_next().await.map_err(to_io)? {
            if let Some(id) = meta.location.filename() {
                stored.push(Stored {
                    id: id.to_owned(),
                    written: meta.last_modified.into(),
                });
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchkit_testkit::s3::S3;

    fn store(prefix: &str) -> S3Files {
        let s3 = S3::shared();
        let settings = s3.settings();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        S3Files::open(&format!("s3://{}{prefix}", s3.bucket()), &settings).expect("a store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_passes_the_file_store_suite() {
        super::super::conformance::run_files(&store("")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prefix_keeps_the_files_under_it() {
        let files = store("/some/prefix/");
        assert_eq!(files.dir, "some/prefix/files");
        super::super::conformance::run_files(&files).await;
    }

    #[test]
    fn urls_name_a_bucket() {
        for bad in ["s3://", "file:///x", "bucket"] {
            assert!(S3Files::open(bad, &[]).is_err(), "{bad}");
        }
    }
}
