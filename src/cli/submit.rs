//! `ffleet submit`: build a JobRequest from arguments and publish it with its job id as the
//! `Nats-Msg-Id`; `--wait` follows it to the end.

use super::{Cli, upload};
use anyhow::{Context, Result, bail};
use clap::Args;
use ffleet_runtime::messages::{self, CURRENT, JobRequest, Overrides, Preference};
use ffleet_runtime::nats::{publish, retry};
use ffleet_runtime::storage::MediaUri;
use ffleet_runtime::{JobId, subjects};
use std::path::{Path, PathBuf};
use tracing::Instrument;

/// What a job is: shared by `submit` and `transcode`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Input file (as the services see it).
    pub input: PathBuf,
    /// Output file (as the services see it); the extension picks the container.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Encode profile (default: the server's default).
    #[arg(long)]
    pub profile: Option<String>,
    /// Quality override, within the profile's range.
    #[arg(long)]
    pub quality: Option<i32>,
    /// Target segment length in seconds.
    #[arg(long)]
    pub segment_seconds: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Kind of encoder wanted: gpu, cpu or any.
    #[arg(long, default_value = "any", value_parser = parse_preference)]
    pub prefer: Preference,
    /// Make --prefer a requirement (never spill to the other kind).
    #[arg(long)]
    pub require: bool,
    /// Job id (default: generated).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Follow the job and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
    /// INPUT is a file on this machine: stream it into the fleet's media bucket first, and have
    /// the output stored there too (fetched to OUTPUT with --wait). For fleets that cannot see
    /// this machine's files.
    #[arg(long)]
    pub upload: bool,
    /// Submit on the privileged subject, where priorities above the server's
    /// `splitter.max_submitter_priority` are allowed (the credentials must permit it).
    #[arg(long)]
    pub privileged: bool,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn file_uri(p: &Path) -> Result<String> {
    url::Url::from_file_path(absolute(p)?)
        .map(|u| u.to_string())
        .map_err(|_| anyhow::anyhow!("{} cannot be expressed as a file URI", p.display()))
}

/// A request for `args`, with a fresh job id unless one is given. With `--upload`, input and
/// output name objects in the media bucket (`jobs/<job>/in/<name>`, `outputs/<job>/<name>`).
pub fn build_request(args: &SubmitArgs) -> Result<JobRequest> {
    let id = match &args.job_id {
        Some(id) => JobId::plain(id.as_str())?,
        None => JobId::new(format!("job-{}", uuid::Uuid::new_v4().simple()))?,
    };
    let (input, output) = if args.upload {
        (
            MediaUri::object_uri(&upload::input_key(&id, &args.job.input)),
            MediaUri::object_uri(&upload::output_key(&id, &args.job.output)),
        )
    } else {
        (file_uri(&args.job.input)?, file_uri(&args.job.output)?)
    };
    Ok(JobRequest {
        version: CURRENT,
        job_id: id,
        input,
        output,
        profile: args.job.profile.clone(),
        overrides: Overrides {
            quality: args.job.quality,
        },
        segment_seconds: args.job.segment_seconds,
        priority: args.priority,
        prefer: args.prefer,
        require: args.require,
        input_digest: None,
        retry_of: None,
    })
}

/// The root of a job's trace when ffleet itself submits it.
pub(crate) fn submit_span(job: &JobId) -> tracing::Span {
    tracing::info_span!(
        "submit",
        otel.kind = "producer",
        ffleet.service = "client",
        ffleet.job = %job,
    )
}

pub(crate) fn parse_preference(s: &str) -> Result<Preference, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?} is not one of gpu, cpu, any"))
}

pub async fn run(cli: &Cli, args: &SubmitArgs) -> Result<i32> {
    let mut req = build_request(args)?;
    let _telemetry = super::telemetry(cli)?;
    // No provisioning and no KV unless the role allows: a submitter may only publish requests,
    // read its job's events and move media through the media bucket.
    let link = super::connect_link(cli).await?;
    let js = link.jetstream();
    if args.upload && link.config.nats.tenant.is_some() {
        bail!(
            "--upload is not for a tenant's credentials: a tenant's media is files under its \
             directory of the fleet's tenant roots (storage.tenant_roots: <tenant root>/<tenant>)"
        );
    }
    let store = if args.upload {
        let store = upload::open(&js, link.retry, &link.config).await?;
        // The request names what was uploaded: the fleet reads only these bytes.
        req.input_digest =
            retry::as_client(upload::send(&link.config, &store, &args.job.input, &req)).await?;
        Some(store)
    } else {
        None
    };
    // A tenant's job is its own inside the fleet (scoped); the request names it as the tenant
    // does.
    let tenant = link.config.nats.tenant.clone();
    let job = match &tenant {
        Some(t) => JobId::scoped(t, &req.job_id),
        None => req.job_id.clone(),
    };
    // Subscribe before publishing so no event can slip past.
    let events = if args.wait {
        Some(super::follow::subscribe(&link.client, &job).await?)
    } else {
        None
    };
    let subject = match (&tenant, args.privileged) {
        (Some(_), true) => bail!("--privileged is not for a tenant's credentials"),
        (Some(t), false) => subjects::jobs_submit_tenant(t),
        (None, true) => subjects::JOBS_SUBMIT_PRIVILEGED.to_owned(),
        (None, false) => subjects::JOBS_SUBMIT.to_owned(),
    };
    // The duplicate window is the stream's, shared by every client and tenant: a message id
    // that is the job's id could be sent first by another client to have this request dropped.
    // One unguessable id per submission still makes a retried publish a duplicate; a second
    // submission of a used job id is answered `duplicate_job` by the splitter.
    let msg_id = format!("{job}.{}", uuid::Uuid::new_v4().simple());
    // A full store is the user's to hear about at once, not to wait out.
    let stored = match retry::as_client(publish::raw(
        &js,
        link.retry,
        subject,
        messages::encode(&req),
        &msg_id,
    ))
    .instrument(submit_span(&job))
    .await
    {
        Ok(stored) => stored,
        Err(e) => {
            // An upload that no job will use would hold its space until the bucket's age
            // limit: the last chunk of a large one can be what filled the store.
            if let Some(store) = &store {
                upload::discard(store, &req).await;
            }
            return Err(e).context("submitting the job");
        }
    };
    println!("{}", req.job_id);
    match events {
        None => Ok(0),
        Some(sub) => {
            let sub = sub.request(stored.sequence);
            let outcome = super::follow::follow(&link.follow, &job, sub, true).await?;
            if let (Some(store), super::follow::Outcome::Completed(done)) = (&store, &outcome) {
                let expect = done.digest.as_deref();
                upload::receive(&link.config, store, &req, &args.job.output, expect).await?;
            }
            Ok(outcome.report(Some(&args.job.output)))
        }
    }
}
