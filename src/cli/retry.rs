//! `ffleet retry JOB [--wait]`: runs a failed or cancelled job again as a new job linked to it
//! (`<id>-r<n>`, its record naming the old one in `retry_of`, the old one's naming it in
//! `retried_as`), reusing the segments the old run encoded. Prints the new job's id, as
//! `submit` does, and with `--wait` follows it to its end.

use super::Cli;
use anyhow::{Result, bail};
use ffleet_runtime::JobId;

pub async fn run(cli: &Cli, id: &str, wait: bool) -> Result<i32> {
    let link = super::connect_link(cli).await?;
    let job = super::job_of(&link.config, id)?;
    let Some(st) = super::ask::retry(&link.client, &job).await? else {
        bail!("no job {id:?} (never submitted, not yet taken in, or expired)");
    };
    // The retry's request, when this answer submitted it: a refusal of it (a tenant at its
    // quota) ends the wait as a refused submit does.
    let sequence = st.request_seq;
    let Some(again) = st.retried_as else {
        bail!("the fleet answered the retry of {id:?} without naming the new job");
    };
    // Named as the asker names jobs: a tenant's by its own id.
    let again = match job.tenant() {
        Some(t) => JobId::scoped(&t, &JobId::plain(again.local())?),
        None => again,
    };
    println!("{}", again.local());
    if !wait {
        return Ok(0);
    }
    let mut sub = super::follow::subscribe(&link.client, &again).await?;
    if let Some(seq) = sequence {
        sub = sub.request(seq);
    }
    let outcome = super::follow::follow(&link.follow, &again, sub, true).await?;
    Ok(outcome.report(None))
}
