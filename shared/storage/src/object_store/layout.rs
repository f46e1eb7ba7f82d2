//! How a bucket names its subjects. The media bucket keeps the standard object store layout
//! (`$O.<bucket>.C.<nuid>`, `$O.<bucket>.M.<base64url name>`), which other systems' tools read,
//! with a job index beside it (`IDX_<bucket>`) so a job's cleanup finds its objects. The
//! fleet's scratch bucket, which only ffleet's services touch, puts each job's id in the
//! subjects instead (`$O.<bucket>.C.<job>.<nuid>`, `$O.<bucket>.M.<job>.<base64url name>`):
//! a job's cleanup is two purges by subject, and an upload writes no index entry (two
//! replicated writes per segment fewer at replicas 3).

use super::ObjectStore;
use crate::{StorageError, check_key, keys};
use async_nats::jetstream::object_store::{self, ObjectInfo};
use async_nats::jetstream::stream;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use ffleet_nats::BoxError;
use ffleet_protocol::subjects;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// The standard layout, with a job index beside the bucket.
    Standard,
    /// Each object's subjects carry its job's id (the scratch bucket).
    ByJob,
}

impl ObjectStore {
    /// The job token `key`'s subjects carry in a by-job bucket; none in a standard one, or for a
    /// key outside every job's scratch.
    fn job_token<'k>(&self, key: &'k str) -> Option<&'k str> {
        match self.layout {
            Layout::ByJob => keys::job_of(key),
            Layout::Standard => None,
        }
    }

    /// The subject of `key`'s metadata.
    pub(super) fn meta_subject(&self, key: &str) -> String {
        let name = URL_SAFE.encode(key);
        match self.job_token(key) {
            Some(job) => subjects::object_meta(&self.bucket, &format!("{job}.{name}")),
            None => subjects::object_meta(&self.bucket, &name),
        }
    }

    /// The subject of the chunks upload `nuid` of `key` stored.
    pub(super) fn chunks_subject(&self, key: &str, nuid: &str) -> String {
        match self.job_token(key) {
            Some(job) => subjects::object_chunks(&self.bucket, &format!("{job}.{nuid}")),
            None => subjects::object_chunks(&self.bucket, nuid),
        }
    }

    /// Filters matching every metadata subject and every chunk subject of the bucket.
    pub(super) fn all_subjects(&self) -> (String, String) {
        let any = match self.layout {
            Layout::Standard => "*",
            Layout::ByJob => ">",
        };
        (
            subjects::object_meta(&self.bucket, any),
            subjects::object_chunks(&self.bucket, any),
        )
    }

    /// `key`'s metadata (`None`: no such object). Deleted objects are returned as such.
    pub(super) async fn info(&self, key: &str) -> Result<Option<ObjectInfo>, BoxError> {
        if self.layout == Layout::Standard {
            return match self.store.info(key).await {
                Ok(i) => Ok(Some(i)),
                Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let subject = self.meta_subject(key);
        let payload = if self.stream.cached_info().config.allow_direct {
            match self.stream.direct_get_last_for_subject(&subject).await {
                Ok(m) => m.payload,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        } else {
            match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m.payload,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Some(serde_json::from_slice(&payload)?))
    }

    /// Removes the objects under `prefix` within `job`'s scratch in a by-job bucket: the whole
    /// job by two purges (every metadata message, then every chunk set its uploads stored,
    /// finished or not: a failure between them leaves chunks the next try's filter still finds,
    /// never objects whose chunks are gone), a narrower prefix object by object from the job's
    /// metadata subjects.
    pub(super) async fn delete_by_job(&self, job: &str, prefix: &str) -> Result<(), StorageError> {
        check_key(prefix)?;
        if prefix.strip_prefix(keys::SCRATCH) == Some(job) {
            let chunks = subjects::object_chunks(&self.bucket, &format!("{job}.>"));
            let metas = subjects::object_meta(&self.bucket, &format!("{job}.>"));
            return self.purge_all(prefix, vec![metas, chunks]).await;
        }
        let job_metas = subjects::object_meta(&self.bucket, &format!("{job}.*"));
        self.delete_named(&job_metas, prefix).await
    }
}
