//! `ObjectStore`: media in a JetStream Object Store bucket, for nodes that share nothing but the
//! NATS URL. Objects stream between files and the bucket one chunk at a time (memory is a few
//! chunks, never the file), and every download is checked against the SHA-256 digest.
//!
//! Uploads are written here rather than with async-nats's `put`: a failed upload (a full
//! bucket, a lost server) must purge the chunks it already stored, which needs the chunk
//! subject `put` keeps to itself, and chunks are acknowledged a window at a time instead of one
//! round trip each. The layout (chunks under `$O.<bucket>.C.<nuid>`, a rolled-up metadata message
//! under `$O.<bucket>.M.<base64url name>`) is the standard one, so the `nats object` tools and
//! async-nats's readers see ordinary objects.
//!
//! Downloads read the metadata and then each chunk by message gets, never through a consumer:
//! no role needs to create consumers on the media stream, so none can point one at a subject of
//! its choice and have the server deliver stored bytes there. Roll-ups are refused too (the
//! metadata is written without one).
//!
//! The backing stream is created here (not with `create_object_store`, which fails on
//! nats-server 2.9 as the KV creation does) with `discard: new`, so a bucket at `max_bytes`
//! refuses the next chunk and the upload fails with `Full` instead of evicting older media.
//!
//! Every upload under a job's scratch (`jobs/<job>/...`) is first recorded in the bucket's index
//! stream (`IDX_<bucket>`, one empty message per upload, the object's name and its chunks' id in
//! the subject), so the job's cleanup asks the server for that job's subjects instead of listing
//! the whole bucket. A job's input stored by another system gets an entry of its name alone.

mod layout;
mod route;

use layout::Layout;

use super::{Aged, Local, StorageError, Stored, Survey, WorkDir, check_key, io, keys};
use crate::config::StorageConfig;
use async_nats::jetstream::Context;
use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectOptions};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::BytesMut;
use ffleet_nats::provision::ensure_stream;
use ffleet_nats::retry::{self, Patience, Policy};
use ffleet_nats::{BoxError, NatsError, Refusal, refusal};
use ffleet_protocol::subjects;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Chunk acknowledgements awaited at once: throughput without unbounded buffering.
const ACK_WINDOW: usize = 8;
/// How long one chunk's get may go unanswered before the download starts again (at least: a
/// later try's own timeout can be longer). Chunks are 128 KiB: seconds without one is not a slow
/// link but a server gone.
const READ_IDLE: Duration = Duration::from_secs(5);
/// Reads of an object whose bytes do not match its digest before it is called corrupt.
const DIGEST_TRIES: u32 = 4;
/// What a corrupt download found, beside the digest it expected.
const MISMATCHED_BYTES: &str = "bytes that do not match it";
/// Chunks and metadata messages the bucket holds at most (bytes are bounded by `max_bytes`).
const MEDIA_MAX_MSGS: i64 = 50_000_000;
/// Consumers the media stream holds at most: none is needed (reads are message gets), a few
/// for an operator's `nats object` tools; a client cannot fill the server with them.
const MEDIA_MAX_CONSUMERS: i32 = 8;
/// Objects nobody deleted (a crash between upload and cleanup) expire after this long.
const MEDIA_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct ObjectStore {
    js: Context,
    store: object_store::ObjectStore,
    stream: stream::Stream,
    /// `IDX_<bucket>`: which job each scratch object belongs to (standard layout only: a by-job
    /// bucket's subjects say it).
    index: Option<stream::Stream>,
    layout: Layout,
    bucket: String,
    chunk_size: usize,
    work: Arc<WorkDir>,
    /// How broker operations retry: the window of an upload or download sent again, and how
    /// long each lookup waits for an answer.
    policy: Policy,
    /// Whether these credentials may purge the media stream (services that clean up a job's
    /// media); the others leave what they cannot remove to the job's cleanup.
    purges: bool,
    /// The fleet's scratch bucket (`subjects::scratch_bucket`), where the fleet's own media goes
    /// (`keys::fleet_made`); `None` for clients, whose credentials do not reach it, and for the
    /// scratch bucket itself.
    scratch: Option<Arc<ObjectStore>>,
}

/// A broker error of `op` on `key`, classified by what JetStream refused (`nats::refusal`):
/// the bucket at its own cap (`storage.max_bytes`) is `Full`, the job's media does not fit
/// what the operator allowed; a server without room is `StoreFull`, which clears when anyone
/// frees space; anything else is a broker hiccup.
fn nats<'a, E: Into<BoxError>>(
    op: &'static str,
    key: &'a str,
) -> impl FnOnce(E) -> StorageError + 'a {
    move |e| {
        let source = e.into();
        match refusal(&*source) {
            Some(Refusal::StreamFull) => StorageError::Full(source),
            Some(Refusal::StoreFull) => StorageError::StoreFull {
                op,
                key: key.into(),
                source,
            },
            Some(Refusal::StreamLimit) | None => StorageError::Nats {
                op,
                key: key.into(),
                source,
            },
        }
    }
}

/// Like `nats`, for an error the retry loop already classified: a `StoreFull` keeps the
/// server's own error (its text is worded for a user once, not twice).
fn from_nats<'a>(op: &'static str, key: &'a str) -> impl FnOnce(NatsError) -> StorageError + 'a {
    move |e| match e {
        NatsError::StoreFull { source, .. } => nats(op, key)(source),
        other => nats(op, key)(other),
    }
}

/// Where the bucket's streams live, decided outside the `[storage]` section: their replicas (from
/// `[streams]`), and whether this process may create them (under per-role credentials only the
/// admin does; the others look them up).
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub replicas: usize,
    pub create: bool,
    /// May purge the media stream (remove objects): not a submitter's or an encoder's
    /// credentials, whose purge would be the whole stream's.
    pub purge: bool,
    /// Opens the fleet's scratch bucket too (the services and the admin): clients' credentials
    /// do not reach it, and what they store (uploads, outputs) is in the media bucket.
    pub scratch: bool,
}

impl ObjectStore {
    /// Ensures the bucket's stream exists (retrying while JetStream is not ready, for up to
    /// `patience`) and opens it; `policy` bounds each try, here and in every later operation.
    ///
    /// With `placement.scratch`, the fleet's scratch bucket is ensured and opened the same way,
    /// and every object the fleet makes (`keys::fleet_made`) is kept there.
    pub async fn open(
        js: &Context,
        policy: Policy,
        cfg: &StorageConfig,
        placement: Placement,
        work: Arc<WorkDir>,
        patience: Patience,
    ) -> Result<Self, StorageError> {
        // Boxed: the in-process fleets of the tests open several stores on one thread's stack.
        let mut media = Box::pin(Self::open_bucket(
            js,
            policy,
            cfg,
            (cfg.bucket.clone(), Layout::Standard),
            placement,
            work.clone(),
            patience,
        ))
        .await?;
        if placement.scratch {
            let name = subjects::scratch_bucket(&cfg.bucket);
            let scratch = Box::pin(Self::open_bucket(
                js,
                policy,
                cfg,
                (name, Layout::ByJob),
                placement,
                work,
                patience,
            ))
            .await?;
            media.scratch = Some(Arc::new(scratch));
        }
        Ok(media)
    }

    /// Ensures and opens one bucket, `bucket` laid out as `layout`, with `cfg`'s settings.
    async fn open_bucket(
        js: &Context,
        policy: Policy,
        cfg: &StorageConfig,
        (bucket, layout): (String, Layout),
        placement: Placement,
        work: Arc<WorkDir>,
        patience: Patience,
    ) -> Result<Self, StorageError> {
        let name = subjects::object_stream(&bucket);
        let replicas = placement.replicas;
        let spec = stream::Config {
            name: name.clone(),
            subjects: subjects::object_wildcards(&bucket),
            storage: StorageType::File,
            num_replicas: replicas,
            discard: DiscardPolicy::New,
            // Metadata is written without roll-ups (see `send`); allowing them would let any
            // client that writes media empty the stream with one header.
            allow_rollup: false,
            allow_direct: replicas == 1,
            // Nobody reads media through a consumer (see `download_once`).
            max_consumers: MEDIA_MAX_CONSUMERS,
            max_age: MEDIA_MAX_AGE,
            max_bytes: if cfg.max_bytes == 0 {
                -1
            } else {
                cfg.max_bytes as i64
            },
            // Any valid chunk size, and the metadata message.
            max_message_size: 1 << 20,
            max_messages: MEDIA_MAX_MSGS,
            ..Default::default()
        };
        let create = placement.create;
        // Not `nats`: a stream that cannot be placed is refused with a full store's code
        // (10023 on nats-server 2.9), and must not read as one.
        let opening = |e: NatsError| StorageError::Nats {
            op: "open",
            key: bucket.clone(),
            source: e.into(),
        };
        let stream = ensure_stream(js, policy, spec, patience, create)
            .await
            .map_err(opening)?;
        let index = match layout {
            Layout::Standard => Some(
                ensure_stream(js, policy, index_spec(&bucket, replicas), patience, create)
                    .await
                    .map_err(opening)?,
            ),
            Layout::ByJob => None,
        };
        // Looked up through elections like the streams above: a client that opens the bucket
        // while a NATS node restarts (`submit --upload`) waits for it instead of failing.
        let store = retry::retry(policy, "open object store", &bucket, patience, |_| {
            js.get_object_store(&bucket)
        })
        .await
        .map_err(from_nats("open", &bucket))?;
        Ok(Self {
            js: js.clone(),
            store,
            stream,
            index,
            bucket,
            chunk_size: cfg.chunk_size.clamp(4096, 1000 << 10),
            work,
            policy,
            purges: placement.purge,
            scratch: None,
            layout,
        })
    }

    /// Streams `file` into the bucket as `key`. On failure, the chunks already stored are
    /// purged; on success, the chunks of the value it replaced (by a writer that may purge;
    /// another's go with the job, named by its index).
    ///
    /// A broker error (a stream leader lost in an election, a server gone) sends it again, for
    /// up to the run-time retry window (`nats.op_retry_secs`): a unit whose result could not be
    /// stored is handed back, and hand-backs during one election used up a unit's deliveries.
    pub async fn upload(&self, file: &Path, key: &str) -> Result<Stored, StorageError> {
        check_key(key)?;
        let window = match self.policy.window() {
            Patience::For(d) => d,
            Patience::Forever => Duration::MAX,
        };
        let started = std::time::Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            match self.upload_once(file, key).await {
                Err(e @ StorageError::StoreFull { .. }) if retry::is_client() => return Err(e),
                Err(e @ StorageError::StoreFull { .. }) if started.elapsed() < window => {
                    retry::warn_store_full("upload", key, &e);
                    tokio::time::sleep(retry::backoff(tries)).await;
                }
                Err(e @ StorageError::Nats { .. }) if started.elapsed() < window => {
                    tracing::warn!(key, tries, error = %e, "upload failed, sending it again");
                    tokio::time::sleep(retry::backoff(tries)).await;
                }
                other => return other,
            }
        }
    }

    async fn upload_once(&self, file: &Path, key: &str) -> Result<Stored, StorageError> {
        // Recorded before a chunk is sent: a crash mid-upload leaves an index entry with no
        // object (skipped at cleanup), never an object the cleanup cannot find.
        let nuid = nuid_for(key);
        if let Some(job) = keys::job_of(key).filter(|_| self.index.is_some()) {
            // One entry names both the object and this upload's chunks: a writer that may not
            // purge (an encoder) leaves a failed or replaced upload's chunks to the job's
            // cleanup. At replicas 3 each entry is a replicated write, paid twice per segment.
            let upload =
                subjects::media_index_upload(&self.bucket, job, &URL_SAFE.encode(key), &nuid);
            self.index_entry(&upload, key).await?;
        }
        // The value this replaces, whose chunks go once the new ones are in: only a writer that
        // may purge asks (an encoder's replaced chunks go with the job, named by its index).
        let previous = if self.purges {
            self.info(key).await.ok().flatten()
        } else {
            None
        };
        let chunks_subject = self.chunks_subject(key, &nuid);
        match self.send(file, key, &nuid, &chunks_subject).await {
            Ok(stored) => {
                if let Some(old) = previous.filter(|o| o.nuid != nuid && nuid_of(key, &o.nuid)) {
                    let subject = self.chunks_subject(key, &old.nuid);
                    if let Err(e) = self.stream.purge().filter(subject).await {
                        tracing::warn!(key, error = %e, "old chunks of a replaced object not purged");
                    }
                }
                Ok(stored)
            }
            Err(e) => {
                if self.purges
                    && let Err(pe) = self.stream.purge().filter(chunks_subject).await
                {
                    tracing::warn!(key, error = %pe, "chunks of a failed upload not purged");
                }
                Err(e)
            }
        }
    }

    async fn send(
        &self,
        file: &Path,
        key: &str,
        nuid: &str,
        chunks_subject: &str,
    ) -> Result<Stored, StorageError> {
        let mut inflight = VecDeque::with_capacity(ACK_WINDOW);
        let sent = self
            .send_chunks(file, key, chunks_subject, &mut inflight)
            .await;
        if sent.is_err() {
            // Chunks already on their way may be stored after a purge that runs before them:
            // wait for every answer first, so the caller's purge removes them all.
            for ack in inflight.drain(..) {
                let _ = ack.await;
            }
        }
        let (size, chunks, sha) = sent?;
        let digest = format!("SHA-256={}", URL_SAFE.encode(sha.finalize()));
        let info = ObjectInfo {
            name: key.to_owned(),
            description: None,
            metadata: Default::default(),
            headers: None,
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(self.chunk_size),
            }),
            bucket: self.bucket.clone(),
            nuid: nuid.to_owned(),
            size,
            chunks,
            modified: Some(time::OffsetDateTime::now_utc()),
            digest: Some(digest.clone()),
            deleted: false,
        };
        let body = serde_json::to_vec(&info).map_err(nats("upload", key))?;
        // No roll-up header: the bucket refuses roll-ups, since a client that may write
        // metadata could otherwise send `Nats-Rollup: all` and empty the whole stream. Readers
        // take the newest metadata of a name; an older one goes with the name's deletion.
        let subject = self.meta_subject(key);
        self.js
            .publish(subject, body.into())
            .await
            .map_err(nats("upload", key))?
            .await
            .map_err(nats("upload", key))?;
        Ok(Stored {
            digests: [(key.to_owned(), digest.clone())].into(),
            digest: Some(digest),
            bytes_moved: size as u64,
        })
    }

    /// Reads `file` chunk by chunk and publishes the chunks, keeping up to `ACK_WINDOW`
    /// acknowledgements in flight (left in `inflight` when it fails).
    async fn send_chunks(
        &self,
        file: &Path,
        key: &str,
        chunks_subject: &str,
        inflight: &mut VecDeque<async_nats::jetstream::context::PublishAckFuture>,
    ) -> Result<(usize, usize, Sha256), StorageError> {
        let mut f = tokio::fs::File::open(file).await.map_err(io(file))?;
        let mut sha = Sha256::new();
        let (mut size, mut chunks) = (0_usize, 0_usize);
        let mut last = 0_u64;
        loop {
            let mut buf = BytesMut::with_capacity(self.chunk_size);
            while buf.len() < self.chunk_size {
                if f.read_buf(&mut buf).await.map_err(io(file))? == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            sha.update(&buf);
            size += buf.len();
            chunks += 1;
            let ack = self
                .js
                .publish(chunks_subject.to_owned(), buf.freeze())
                .await
                .map_err(nats("upload", key))?;
            inflight.push_back(ack);
            if inflight.len() >= ACK_WINDOW
                && let Some(ack) = inflight.pop_front()
            {
                last = stored_in_order(ack, last, key).await?;
            }
        }
        while let Some(ack) = inflight.pop_front() {
            last = stored_in_order(ack, last, key).await?;
        }
        Ok((size, chunks, sha))
    }

    /// Streams object `key` into `dest` (created, never overwritten), checking its digest
    /// against `expect` before and against the bytes while reading. Returns the bytes read.
    ///
    /// Bytes that do not match the recorded digest are read again (`DIGEST_TRIES` in all)
    /// before the object is called corrupt: a reader placed on a replica that is still catching
    /// up after a server restart sees the object end early, which looks the same.
    pub async fn download(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
    ) -> Result<u64, StorageError> {
        self.download_checked(key, expect, dest)
            .await
            .map(|(n, _)| n)
    }

    /// `download`, also returning the digest the bytes were checked against.
    async fn download_checked(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
    ) -> Result<(u64, String), StorageError> {
        check_key(key)?;
        // A job's input may have been stored by another system with the standard tools, which
        // know nothing of the index: the splitter's read records it, so it goes with the job.
        if let Some(job) = keys::input_job_of(key).filter(|_| self.index.is_some())
            && let Err(e) = self.index_object(job, key).await
        {
            // The object is there to read: without its entry it only outlives its job (until
            // the bucket's max age).
            tracing::warn!(key, error = %e, "job input not indexed");
        }
        let window = match self.policy.window() {
            Patience::For(d) => d,
            Patience::Forever => Duration::MAX,
        };
        let started = std::time::Instant::now();
        let (mut tries, mut mismatches) = (0, 0);
        loop {
            tries += 1;
            match self.download_once(key, expect, dest, tries - 1).await {
                Err(StorageError::Corrupt { found, .. })
                    if found == MISMATCHED_BYTES && mismatches + 1 < DIGEST_TRIES =>
                {
                    mismatches += 1;
                    tracing::warn!(
                        key,
                        tries,
                        "object bytes did not match their digest, reading again"
                    );
                    tokio::time::sleep(Duration::from_millis(250 << mismatches)).await;
                }
                // A broker error (a stream leader lost in an election): read again from the
                // start rather than hand the unit back, as uploads are sent again.
                Err(e @ StorageError::Nats { .. }) if started.elapsed() < window => {
                    tracing::warn!(key, tries, error = %e, "download failed, reading again");
                    tokio::time::sleep(retry::backoff(tries)).await;
                }
                other => return other,
            }
        }
    }

    /// One read of object `key` into `dest`; `try_no` bounds how long each request may wait for
    /// an answer (`Policy::try_timeout`).
    ///
    /// Read by message gets (the metadata, then each chunk by its subject from the last
    /// sequence), not by async-nats's reader: that one creates a push consumer on the media
    /// stream, and a role allowed to create consumers there could point one at any subject and
    /// have the server deliver bytes it stored to it (a forged event, say). With gets, no role
    /// needs a consumer on this stream.
    async fn download_once(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
        try_no: u32,
    ) -> Result<(u64, String), StorageError> {
        let limit = self.policy.try_timeout(try_no);
        let got = tokio::time::timeout(limit, self.info(key))
            .await
            .map_err(|_| nats("download", key)(format!("no answer within {limit:?}")))?;
        let info = got
            .map_err(nats("download", key))?
            .ok_or_else(|| StorageError::Missing(key.into()))?;
        if info.deleted {
            return Err(StorageError::Missing(key.into()));
        }
        if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
            // ffleet never stores links, and following one would read another object under
            // this name.
            return Err(StorageError::Corrupt {
                key: key.into(),
                expected: "an object".into(),
                found: "a link (not followed)".into(),
            });
        }
        let found = info.digest.clone().unwrap_or_default();
        // An object with no digest matches no expected one.
        if let Some(expected) = expect
            && (expected != found || found.is_empty())
        {
            return Err(StorageError::Corrupt {
                key: key.into(),
                expected: expected.into(),
                found,
            });
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(io(dest))?;
        let mut out = tokio::io::BufWriter::with_capacity(self.chunk_size, file);
        let copied = self.copy_chunks(key, &info, limit, &mut out).await;
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                drop(out);
                let _ = tokio::fs::remove_file(dest).await;
                return Err(match e {
                    Copy::Mismatch => StorageError::Corrupt {
                        key: key.into(),
                        expected: found,
                        found: MISMATCHED_BYTES.into(),
                    },
                    Copy::Read(e) => nats("download", key)(e),
                    // This machine's own disk (full, say): not the broker's doing.
                    Copy::Write(e) => io(dest)(e),
                });
            }
        };
        out.flush().await.map_err(io(dest))?;
        out.into_inner().sync_all().await.map_err(io(dest))?;
        Ok((n, found))
    }

    /// Copies the chunks of the object `info` describes into `to`, one message get each (the
    /// next message on the object's chunk subject after the last one read), and checks their
    /// count, size and SHA-256 against `info`.
    async fn copy_chunks(
        &self,
        key: &str,
        info: &ObjectInfo,
        limit: Duration,
        to: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, Copy> {
        // Metadata is anyone's to write: a chunk subject with a wildcard would read other
        // objects' chunks, and a size it does not keep to would fill this disk.
        if !literal_nuid(&info.nuid) {
            return Err(Copy::Mismatch);
        }
        let subject = self.chunks_subject(key, &info.nuid);
        let mut sha = Sha256::new();
        let (mut total, mut next) = (0_u64, 0_u64);
        for _ in 0..info.chunks {
            let wait = limit.max(READ_IDLE);
            let got = tokio::time::timeout(wait, self.next_chunk(&subject, next))
                .await
                .map_err(|_| Copy::Read(format!("no chunk within {wait:?}").into()))?;
            // A chunk missing before the count is reached: the object was deleted or replaced
            // while read (read again, from its metadata).
            let msg = got.map_err(Copy::Read)?;
            next = msg.sequence + 1;
            // Uploads never store an empty chunk, and the bytes must stay within the size.
            if msg.payload.is_empty() || total + msg.payload.len() as u64 > info.size as u64 {
                return Err(Copy::Mismatch);
            }
            sha.update(&msg.payload);
            to.write_all(&msg.payload).await.map_err(Copy::Write)?;
            total += msg.payload.len() as u64;
        }
        let digest = format!("SHA-256={}", URL_SAFE.encode(sha.finalize()));
        if total != info.size as u64 || info.digest.as_deref().is_some_and(|d| d != digest) {
            return Err(Copy::Mismatch);
        }
        Ok(total)
    }

    /// The first message on `subject` at or after sequence `from`. A single-replica bucket allows
    /// direct gets, whose answer is the message itself; a replicated one is asked through its
    /// leader (a direct get there could be answered by a replica that has not caught up), whose
    /// answer carries the chunk in base64 (a third more bytes).
    async fn next_chunk(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<async_nats::jetstream::message::StreamMessage, BoxError> {
        if self.stream.cached_info().config.allow_direct {
            Ok(self
                .stream
                .direct_get_next_for_subject(subject, Some(from.max(1)))
                .await?)
        } else {
            Ok(self
                .stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject.to_owned())
                .send()
                .await?)
        }
    }

    /// Removes object `key` entirely (its chunks and its metadata, leaving no delete marker).
    /// The metadata names the chunks, and any client that may write the bucket can write
    /// metadata: chunks are purged only under a NUID made for `key` (`nuid_for`), so metadata
    /// naming another object's chunks (or a wildcard) cannot steer this purge at them; others
    /// (objects stored by earlier releases or other tools) lose their metadata here and their
    /// chunks at the sweep, once no object refers to them. The metadata subject comes from
    /// `key`, never from the name the metadata claims.
    async fn remove(&self, key: &str, info: Option<&ObjectInfo>) -> Result<(), StorageError> {
        let meta = self.meta_subject(key);
        let chunks = info
            .filter(|i| nuid_of(key, &i.nuid))
            .map(|i| self.chunks_subject(key, &i.nuid));
        if chunks.is_none() {
            tracing::debug!(key, "chunks not made for this name, left to the sweep");
        }
        self.purge_all(key, chunks.into_iter().chain([meta]).collect())
            .await
    }

    /// Purges `subjects` of object `key`'s stream, in order.
    async fn purge_all(&self, key: &str, subjects: Vec<String>) -> Result<(), StorageError> {
        for subject in subjects {
            self.stream
                .purge()
                .filter(subject)
                .await
                .map_err(nats("delete", key))?;
        }
        Ok(())
    }

    /// Removes object `key` whose uploads the index names: every chunk set they made (the
    /// current one among them: each upload is indexed before its first chunk), then the
    /// metadata, without reading it first. A current chunk set that no upload indexed (stored
    /// by the standard tools under a job's name) is left to the sweep.
    async fn remove_uploads(&self, key: &str, uploads: &[String]) -> Result<(), StorageError> {
        check_key(key)?;
        let chunks = uploads.iter().map(|nuid| self.chunks_subject(key, nuid));
        let meta = self.meta_subject(key);
        self.purge_all(key, chunks.chain([meta]).collect()).await
    }

    /// Every object with its age, read from each one's newest metadata (one message get per
    /// object), and the chunk sets no object refers to removed once their newest chunk is older
    /// than `quiet`: an upload that died before its metadata, or a replaced object's old chunks
    /// its writer could not purge. A set still being written is younger than `quiet`; one whose
    /// object appears between the two listings is referenced by then, or young.
    pub async fn survey(&self, quiet: Duration) -> Result<Survey, StorageError> {
        let now = time::OffsetDateTime::now_utc();
        let age = |t: time::OffsetDateTime| Duration::try_from(now - t).unwrap_or_default();
        let (all_metas, all_chunks) = self.all_subjects();
        let metas = self.subjects_of(&all_metas).await?;
        let mut referenced = std::collections::HashSet::new();
        let mut objects = Vec::new();
        for subject in metas {
            let msg = match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m,
                // Removed since the listing.
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(nats("survey", &subject)(e)),
            };
            let Ok(info) = serde_json::from_slice::<ObjectInfo>(&msg.payload) else {
                tracing::warn!(subject, "object metadata that does not parse, skipped");
                continue;
            };
            // The name from the subject and the age from the server's timestamp: the body is
            // anyone's to write, and a sweep acting on a claimed name or date could be steered
            // at another job's media.
            let Some(name) = name_of(&subject) else {
                continue;
            };
            if info.deleted {
                continue;
            }
            referenced.insert(info.nuid.clone());
            objects.push(Aged {
                age: age(msg.time),
                name,
            });
        }
        let mut orphans_removed = 0;
        let chunks = self.subjects_of(&all_chunks).await?;
        for subject in chunks {
            let nuid = subject.rsplit('.').next().unwrap_or_default();
            if referenced.contains(nuid) || !self.purges {
                continue;
            }
            let newest = match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m.time,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(nats("survey", &subject)(e)),
            };
            if age(newest) < quiet {
                continue;
            }
            self.stream
                .purge()
                .filter(subject.clone())
                .await
                .map_err(nats("survey", &subject))?;
            orphans_removed += 1;
        }
        Ok(Survey {
            objects,
            orphans_removed,
        })
    }

    /// The subjects of the media stream that match `filter` (a stream info request).
    async fn subjects_of(&self, filter: &str) -> Result<Vec<String>, StorageError> {
        let mut listed = self
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(nats("list", filter))?;
        let mut out = Vec::new();
        while let Some(entry) = listed.next().await {
            out.push(entry.map_err(nats("list", filter))?.0);
        }
        Ok(out)
    }

    /// Whether these credentials may remove objects (`Placement::purge`).
    pub fn may_delete(&self) -> bool {
        self.purges
    }

    /// Removes object `key` (nothing when it does not exist): no listing needed.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        let meta = self.meta_subject(key);
        match self.stream.get_last_raw_message_by_subject(&meta).await {
            // Metadata that does not parse is removed all the same (its chunks, if any, go at
            // the sweep): garbage under a job's name must not stop the job's cleanup.
            Ok(m) => {
                let info = serde_json::from_slice::<ObjectInfo>(&m.payload).ok();
                self.remove(key, info.as_ref()).await
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(()),
            Err(e) => Err(nats("info", key)(e)),
        }
    }

    /// Records that object `key` belongs to `job` (idempotent: one message per subject).
    /// Retried through elections like every other JetStream write.
    async fn index_object(&self, job: &str, key: &str) -> Result<(), StorageError> {
        let subject = subjects::media_index_entry(&self.bucket, job, &URL_SAFE.encode(key));
        self.index_entry(&subject, key).await
    }

    /// Writes index entry `subject` (of object `key`).
    async fn index_entry(&self, subject: &str, key: &str) -> Result<(), StorageError> {
        let subject = subject.to_owned();
        let window = self.policy.window();
        retry::retry(self.policy, "publish", &subject, window, |_| async {
            let ack = self
                .js
                .publish(subject.clone(), bytes::Bytes::new())
                .await?;
            Ok::<_, BoxError>(ack.await?)
        })
        .await
        .map_err(from_nats("index", key))?;
        Ok(())
    }

    /// Removes the objects under `prefix` (within `job`'s scratch) that the index names, then
    /// their index entries: a few requests per object of the job, whatever the bucket holds.
    async fn delete_job_objects(&self, job: &str, prefix: &str) -> Result<(), StorageError> {
        let Some(index) = &self.index else {
            return self.delete_by_job(job, prefix).await;
        };
        let filter = subjects::media_index_of_job(&self.bucket, job);
        let entry_of_job = subjects::media_index_entry(&self.bucket, job, "");
        let under = format!("{prefix}/");
        let mut entries = index
            .info_with_subjects(&filter)
            .await
            .map_err(nats("index", prefix))?;
        // Each name with the chunk sets its uploads made (none: an object recorded by name
        // alone, a job's input another system stored).
        let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        while let Some(entry) = entries.next().await {
            let (subject, _) = entry.map_err(nats("index", prefix))?;
            // `<name>` for an object, `<name>.<nuid>` for one upload of it.
            let mut rest = subject.strip_prefix(&entry_of_job).unwrap_or("").split('.');
            let name = rest
                .next()
                .and_then(|t| URL_SAFE.decode(t).ok())
                .and_then(|b| String::from_utf8(b).ok());
            let Some(name) = name.filter(|n| n == prefix || n.starts_with(&under)) else {
                continue;
            };
            let uploads = names.entry(name.clone()).or_default();
            // Only chunks made for this name: an entry is anyone's to write.
            if let Some(nuid) = rest.next().filter(|nuid| nuid_of(&name, nuid)) {
                uploads.push(nuid.to_owned());
            }
        }
        for (name, uploads) in &names {
            // A name that is no key (anyone can write an index entry) can never be removed and
            // must not stop the cleanup of the rest; any other error does, to be tried again.
            let removed = if uploads.is_empty() {
                self.delete(name).await
            } else {
                self.remove_uploads(name, uploads).await
            };
            match removed {
                Err(e @ StorageError::BadKey(_)) => {
                    tracing::warn!(job, error = %e, "index entry that names no key, skipped")
                }
                other => other?,
            }
        }
        // A whole job's cleanup drops its index too; a narrower prefix leaves it (the entries
        // of deleted objects are skipped when the job is cleaned).
        if prefix.strip_prefix(keys::SCRATCH) == Some(job) {
            index
                .purge()
                .filter(filter)
                .await
                .map_err(nats("index", prefix))?;
        }
        Ok(())
    }
}

/// The index stream: an entry per scratch object, kept as long as the media can be.
fn index_spec(bucket: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::media_index_stream(bucket),
        subjects: vec![subjects::media_index_wildcard(bucket)],
        storage: StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: 1,
        max_age: MEDIA_MAX_AGE,
        max_message_size: 4096,
        max_messages: MEDIA_MAX_MSGS,
        ..Default::default()
    }
}

/// Whether `nuid` is one literal subject token of the kind uploads use (async-nats's NUIDs, the
/// ones `nuid_for` makes): never a wildcard.
fn literal_nuid(nuid: &str) -> bool {
    !nuid.is_empty() && nuid.len() <= 64 && nuid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The object name a metadata subject carries in its last token (base64url), whatever the
/// metadata's body claims.
fn name_of(meta_subject: &str) -> Option<String> {
    meta_subject
        .rsplit('.')
        .next()
        .and_then(|t| URL_SAFE.decode(t).ok())
        .and_then(|b| String::from_utf8(b).ok())
}

/// Hex digits of a NUID that name the object it was made for.
const NUID_NAME_HEX: usize = 16;

/// A fresh NUID for an upload of `key`: the start of SHA-256 of the name, then random. A purge
/// follows metadata only to chunks whose NUID was made for the name being removed
/// (`nuid_of`), since the metadata is anyone's to write.
fn nuid_for(key: &str) -> String {
    let name = hex(&Sha256::digest(key.as_bytes()));
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{}", &name[..NUID_NAME_HEX], &random[..16])
}

/// Whether `nuid` was made for `key` by `nuid_for`.
fn nuid_of(key: &str, nuid: &str) -> bool {
    literal_nuid(nuid)
        && nuid.len() == 2 * NUID_NAME_HEX
        && nuid[..NUID_NAME_HEX] == hex(&Sha256::digest(key.as_bytes()))[..NUID_NAME_HEX]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which side of a copy failed: the object being read, or the file being written; or the bytes
/// read do not match the object's recorded size or digest.
enum Copy {
    Read(BoxError),
    Write(std::io::Error),
    Mismatch,
}

/// One bucket's side of `Storage` (`route.rs` picks the bucket).
impl ObjectStore {
    async fn fetch_here(&self, key: &str, expect: Option<&str>) -> Result<Local, StorageError> {
        let name = key.rsplit('/').next().unwrap_or("object");
        let dest = self.work.temp_path(name);
        let (n, digest) = self.download_checked(key, expect, &dest).await?;
        let mut local = Local::copy(dest, n);
        local.digest = Some(digest).filter(|d| !d.is_empty());
        Ok(local)
    }

    async fn commit_here(&self, staged: &Path, key: &str) -> Result<Stored, StorageError> {
        let meta = tokio::fs::metadata(staged).await.map_err(io(staged))?;
        let result = if meta.is_dir() {
            self.commit_dir(staged, key).await
        } else {
            self.upload(staged, key).await
        };
        let _ = if meta.is_dir() {
            tokio::fs::remove_dir_all(staged).await
        } else {
            tokio::fs::remove_file(staged).await
        };
        result
    }

    async fn size_here(&self, key: &str) -> Result<u64, StorageError> {
        check_key(key)?;
        match self.info(key).await.map_err(nats("info", key))? {
            Some(i) if !i.deleted => Ok(i.size as u64),
            _ => Err(StorageError::Missing(key.into())),
        }
    }

    async fn exists_here(&self, key: &str) -> Result<bool, StorageError> {
        check_key(key)?;
        let info = self.info(key).await.map_err(nats("info", key))?;
        Ok(info.is_some_and(|i| !i.deleted))
    }

    async fn delete_prefix_here(&self, prefix: &str) -> Result<(), StorageError> {
        check_key(prefix)?;
        if let Some(job) = keys::job_of(prefix) {
            return self.delete_job_objects(job, prefix).await;
        }
        self.delete_named(&self.all_subjects().0, prefix).await
    }

    /// Removes every object under `prefix` whose metadata subject matches `metas`. The names
    /// come from the stream's metadata subjects (a stream info request), not from async-nats's
    /// listing, which is a consumer on the stream (see `download_once`).
    async fn delete_named(&self, metas: &str, prefix: &str) -> Result<(), StorageError> {
        let under = format!("{prefix}/");
        let doomed: std::collections::BTreeSet<String> = self
            .subjects_of(metas)
            .await?
            .iter()
            .filter_map(|subject| name_of(subject))
            .filter(|n| n == prefix || n.starts_with(&under))
            .collect();
        for name in &doomed {
            match self.delete(name).await {
                Err(e @ StorageError::BadKey(_)) => {
                    tracing::warn!(prefix, error = %e, "object that names no key, skipped")
                }
                other => other?,
            }
        }
        Ok(())
    }
}

impl ObjectStore {
    /// Uploads every file of a staged directory as `key/<file name>`.
    async fn commit_dir(&self, dir: &Path, key: &str) -> Result<Stored, StorageError> {
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(dir).await.map_err(io(dir))?;
        while let Some(e) = rd.next_entry().await.map_err(io(dir))? {
            if e.file_type().await.map_err(io(dir))?.is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        let mut total = Stored::default();
        for name in names {
            let s = self
                .upload(&dir.join(&name), &format!("{key}/{name}"))
                .await?;
            total.bytes_moved += s.bytes_moved;
            total.digests.extend(s.digests);
        }
        Ok(total)
    }
}
/// Waits for one chunk's acknowledgement and checks the stream stored it after the chunk before
/// it. Readers take chunks in stream order, and pipelined chunks can land out of order when the
/// server they went through goes away mid-upload (one still queued on the old route arrives after
/// later ones resent through another server): such an upload fails as transient, and is purged
/// and sent again, instead of storing an object whose bytes are shuffled.
async fn stored_in_order(
    ack: async_nats::jetstream::context::PublishAckFuture,
    last: u64,
    key: &str,
) -> Result<u64, StorageError> {
    let ack = ack.await.map_err(nats("upload", key))?;
    if ack.sequence <= last {
        return Err(nats("upload", key)(format!(
            "chunks stored out of order (sequence {} after {last}): a server went away mid-upload",
            ack.sequence
        )));
    }
    Ok(ack.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nuid_names_the_object_it_was_made_for() {
        let n = nuid_for("jobs/a/src/c.nut");
        assert!(literal_nuid(&n) && nuid_of("jobs/a/src/c.nut", &n));
        assert!(!nuid_of("jobs/b/src/c.nut", &n));
        assert_ne!(n, nuid_for("jobs/a/src/c.nut"), "random beyond the name");
        for forged in [">", "*", "", "ABCDEFGHIJKLMNOPQRSTUV", &n[..31]] {
            assert!(!nuid_of("jobs/a/src/c.nut", forged), "{forged}");
        }
    }
}
