//! Submitting a file from the page, as `ffleet submit --upload` does: the browser's file
//! streams into a temporary file of the dashboard's work directory (never more than
//! `storage.max_upload_bytes`), then into the media bucket with the operator's credentials, and
//! a request naming it is published; the output is kept in the bucket for the job's page to
//! offer as a download. Nothing of the browser's names a path: the file name only becomes the
//! object's name (reduced to key characters) and part of the job id.

use ffleet_runtime::config::Config;
use ffleet_runtime::messages::{self, CURRENT, JobRequest, Overrides, Preference};
use ffleet_runtime::nats::publish;
use ffleet_runtime::nats::retry::{Patience, Policy};
use ffleet_runtime::storage::{self, MediaUri, ObjectStore, Storage, WorkDir};
use ffleet_runtime::{JobId, subjects};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Why an upload did not become a job.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is over the upload limit of {0} bytes (storage.max_upload_bytes)")]
    TooLarge(u64),
    #[error("no file was sent")]
    NoFile,
    #[error("the job's output is not kept in the bucket (only an upload's is)")]
    NotKept,
    #[error("no profile {0:?} (this fleet has: {1})")]
    Profile(String, String),
    #[error("writing the upload to the work directory: {0}")]
    Disk(#[from] std::io::Error),
    #[error("storing the upload: {0}")]
    Store(#[from] storage::StorageError),
    #[error("submitting the job: {0}")]
    Submit(#[from] ffleet_runtime::nats::NatsError),
}

impl UploadError {
    /// The HTTP status that says it.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NoFile | UploadError::Profile(..) => StatusCode::BAD_REQUEST,
            UploadError::NotKept => StatusCode::CONFLICT,
            UploadError::Disk(_) => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Store(_) | UploadError::Submit(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The media bucket through the operator's connection, opened at the first upload.
pub struct Uploads {
    js: async_nats::jetstream::Context,
    policy: Policy,
    config: Arc<Config>,
    /// This process's directory for uploads on their way in and outputs on their way out.
    work: Arc<WorkDir>,
    store: tokio::sync::OnceCell<ObjectStore>,
}

/// A file of the work directory, removed when dropped (however the request ends).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A file received from the browser, in the work directory until dropped.
pub struct Received {
    file: TempFile,
    /// The browser's name for it, reduced to key characters.
    name: String,
}

/// The request's settings the form gives.
#[derive(Debug, Default)]
pub struct Choices {
    pub profile: Option<String>,
    pub priority: i32,
}

impl Uploads {
    pub fn new(operator: &async_nats::Client, config: Arc<Config>) -> std::io::Result<Uploads> {
        let js = ffleet_runtime::nats::connect::jetstream(operator.clone(), &config.nats);
        let work = Arc::new(WorkDir::open(&config.storage.work_dir)?);
        Ok(Uploads {
            js,
            policy: Policy::from_config(&config.nats),
            config,
            work,
            store: tokio::sync::OnceCell::new(),
        })
    }

    /// The most an upload may be.
    pub fn limit(&self) -> u64 {
        self.config.storage.max_upload_bytes
    }

    async fn store(&self) -> Result<&ObjectStore, UploadError> {
        self.store
            .get_or_try_init(|| async {
                let wait = Patience::For(Duration::from_secs_f64(self.config.nats.op_retry_secs));
                ObjectStore::open(
                    &self.js,
                    self.policy,
                    &self.config.storage,
                    self.config.media_placement(),
                    self.work.clone(),
                    wait,
                )
                .await
                .map_err(UploadError::from)
            })
            .await
    }

    /// A temporary file in the work directory for an upload to stream into.
    pub async fn receiving(
        &self,
        browser_name: &str,
    ) -> Result<(tokio::fs::File, Received), UploadError> {
        let name = base_name(browser_name);
        let received = Received {
            file: TempFile(self.work.temp_path(&name)),
            name,
        };
        let file = tokio::fs::File::create(&received.file.0).await?;
        Ok((file, received))
    }

    /// Writes `chunk` to `file`, `written` bytes so far, refusing past the limit.
    pub async fn write(
        &self,
        file: &mut tokio::fs::File,
        written: &mut u64,
        chunk: &[u8],
    ) -> Result<(), UploadError> {
        *written += chunk.len() as u64;
        if *written > self.limit() {
            return Err(UploadError::TooLarge(self.limit()));
        }
        file.write_all(chunk).await?;
        Ok(())
    }

    /// Stores `got` and submits a job for it: the job's id.
    pub async fn submit(&self, got: Received, choices: Choices) -> Result<JobId, UploadError> {
        if let Some(p) = &choices.profile
            && !self.config.profiles.contains_key(p)
        {
            let known: Vec<&str> = self.config.profiles.keys().map(String::as_str).collect();
            return Err(UploadError::Profile(p.clone(), known.join(", ")));
        }
        let job = job_id_for(&got.name);
        let stem = Path::new(&got.name)
            .file_stem()
            .map_or("output".into(), |s| s.to_string_lossy().into_owned());
        let input_key = storage::keys::job_input(&job, &got.name);
        let output_key = storage::keys::kept_output(&job, &format!("{stem}.mp4"));
        let store = self.store().await?;
        let stored = store.put_file(&got.file.0, &input_key).await?;
        drop(got);
        let req = JobRequest {
            version: CURRENT,
            job_id: job.clone(),
            input: MediaUri::object_uri(&input_key),
            output: MediaUri::object_uri(&output_key),
            profile: choices.profile,
            overrides: Overrides::default(),
            segment_seconds: None,
            priority: choices.priority,
            prefer: Preference::default(),
            require: false,
            input_digest: stored.digest,
            retry_of: None,
        };
        let msg_id = format!("{job}.{}", uuid::Uuid::new_v4().simple());
        let sent = publish::raw(
            &self.js,
            self.policy,
            subjects::JOBS_SUBMIT.to_owned(),
            messages::encode(&req),
            &msg_id,
        )
        .await;
        if let Err(e) = sent {
            // No job will clean it: gone now, not at the bucket's age limit.
            let _ = store.delete(&input_key).await;
            return Err(e.into());
        }
        Ok(job)
    }

    /// Fetches a completed job's kept output (`output`: its request's output URI) into a
    /// temporary file, checked against `digest`: the open file, already unlinked, and its
    /// length.
    pub async fn fetch(
        &self,
        output: &str,
        digest: Option<&str>,
    ) -> Result<(tokio::fs::File, u64), UploadError> {
        let Ok(MediaUri::Object(key)) = MediaUri::output(output) else {
            return Err(UploadError::NotKept);
        };
        let store = self.store().await?;
        // Removed however this ends, a client gone mid-fetch included.
        let tmp = TempFile(self.work.temp_path("output"));
        store.download(&key, digest, &tmp.0).await?;
        let file = tokio::fs::File::open(&tmp.0).await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }
}

/// The last component of a browser's file name (browsers send a base name; some once sent a
/// whole path), reduced to key characters.
fn base_name(browser_name: &str) -> String {
    let base = browser_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    storage::keys::sanitize_name(base)
}

/// `<stem>-<8 hex>`: readable, and new each time.
fn job_id_for(name: &str) -> JobId {
    let stem: String = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let stem = stem.trim_matches('-');
    let tail = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let stem = if stem.is_empty() { "upload" } else { stem };
    JobId::new(format!("{stem}-{tail}"))
        .or_else(|_| JobId::new(format!("upload-{tail}")))
        .expect("a plain id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_names_become_key_names_and_readable_ids() {
        assert_eq!(base_name("C:\\Users\\x\\My Clip.MOV"), "My_Clip.MOV");
        assert_eq!(base_name("../../etc/passwd"), "passwd");
        assert_eq!(base_name(""), "media");
        let id = job_id_for("My Clip (final).mp4");
        assert!(id.as_str().starts_with("my-clip--final-"), "{id}");
        assert!(job_id_for("....").as_str().starts_with("upload-"));
        assert_ne!(job_id_for("a.mp4"), job_id_for("a.mp4"));
    }
}
