//! Hearing that jobs were cancelled (`subjects::jobs_ended`), so that work under way for them
//! stops at once: a split still cutting, a merge still concatenating (a cancelled job never
//! reaches the placing of its output: the cancel is refused from `finalizing` on). A service `watch`es the job it works on
//! and gets a token that is cancelled when word of the job's end arrives; the work is dropped
//! with it (its ffmpeg is killed on drop).
//!
//! Core NATS, best effort: a word missed while reconnecting leaves the work to finish and find
//! the job ended at its next write, as before.

use crate::messages::control::JobDrop;
use crate::runtime::Ctx;
use crate::{JobId, subjects};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Jobs being worked on here, each with the token its work stops by and how many hold it.
#[derive(Clone, Default)]
pub struct EndedJobs {
    watched: Arc<Mutex<HashMap<JobId, (CancellationToken, usize)>>>,
}

impl EndedJobs {
    /// Starts listening until `shutdown` fires. A subscription that cannot be made is logged:
    /// the work then only finds out at its next write.
    pub async fn listen(ctx: &Ctx, shutdown: CancellationToken) -> EndedJobs {
        let ended = EndedJobs::default();
        match ctx.client.subscribe(subjects::jobs_ended()).await {
            Ok(mut sub) => {
                let e = ended.clone();
                tokio::spawn(async move {
                    loop {
                        let msg = tokio::select! {
                            m = sub.next() => m,
                            _ = shutdown.cancelled() => return,
                        };
                        let Some(msg) = msg else { return };
                        if let Ok(d) = JobDrop::parse(&msg.payload) {
                            e.ended(&d.job_id);
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "ended jobs are not heard of: cannot subscribe"),
        }
        ended
    }

    /// A token cancelled when `job` is heard to end, for as long as the returned guard lives.
    pub fn watch(&self, job: &JobId) -> Watched {
        let mut w = self.watched.lock().expect("watched lock");
        let entry = w
            .entry(job.clone())
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Watched {
            token: entry.0.clone(),
            job: job.clone(),
            of: self.clone(),
        }
    }

    /// Word that `job` ended: its work stops.
    pub fn ended(&self, job: &JobId) {
        if let Some((token, _)) = self.watched.lock().expect("watched lock").get(job) {
            tracing::info!(job = %job, "job ended: its work here stops");
            token.cancel();
        }
    }
}

/// Whether `job`'s record says it was cancelled: what a word on `jobs_ended` is checked
/// against before work is dropped on it (a stale word, a reused id). Unreadable: not confirmed,
/// the work goes on and finds out at its next write.
pub async fn confirmed(ctx: &Ctx, job: &JobId) -> bool {
    matches!(
        ctx.jobs.get(job.as_str()).await,
        Ok(Some((rec, _))) if rec.state == crate::messages::JobState::Cancelled
    )
}

/// A job watched for its end; unwatched on drop.
pub struct Watched {
    token: CancellationToken,
    job: JobId,
    of: EndedJobs,
}

impl Watched {
    /// Resolves once the job is heard to end.
    pub async fn ended(&self) {
        self.token.cancelled().await
    }

    pub fn has_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the job is heard to end and its record confirms it was cancelled; a word
    /// the record does not confirm (stale, or for an earlier job of a reused id) is ignored.
    pub async fn cancelled(&self, ctx: &Ctx) {
        self.ended().await;
        if !confirmed(ctx, &self.job).await {
            tracing::debug!(job = %self.job, "word of the job's end not confirmed by its record, ignored");
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut w = self.of.watched.lock().expect("watched lock");
        if let Some(entry) = w.get_mut(&self.job) {
            entry.1 -= 1;
            if entry.1 == 0 {
                w.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_job_stops_when_heard_to_end_and_is_forgotten_when_unwatched() {
        let ended = EndedJobs::default();
        let (a, b) = (JobId::new("a").unwrap(), JobId::new("b").unwrap());
        let wa = ended.watch(&a);
        let wa2 = ended.watch(&a);
        let wb = ended.watch(&b);
        ended.ended(&a);
        assert!(wa.has_ended() && wa2.has_ended() && !wb.has_ended());
        drop((wa, wa2));
        assert!(!ended.watched.lock().unwrap().contains_key(&a));
        // A job watched again after its end was heard starts fresh (a reused id).
        assert!(!ended.watch(&a).has_ended());
        // Word of a job nobody watches is nothing.
        ended.ended(&JobId::new("c").unwrap());
        assert!(ended.watched.lock().unwrap().len() <= 2);
    }
}
