//! The HTTP side: routes, the sign-in gate, the live stream and the actions. Pages are
//! rendered from the view in memory; the live stream (`/events`, server-sent events) pushes a
//! section's HTML when it changes, checked at each change of the view and once a second (a
//! node goes lost by silence, which no watch reports), and only sent when it differs.

use crate::actions::{self, JobAction};
use crate::auth::Gate;
use crate::render::{self, Forms, Live};
use crate::view::View;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ffleet_runtime::messages::{JobState, NodeAction, SegmentRecord};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, NodeId, Unit, subjects};
use futures::Stream;
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Everything a request handler reads.
pub struct App {
    pub view: View,
    pub ctx: Ctx,
    pub gate: Gate,
    /// The operator's connection for actions (`None`: the page offers none).
    pub operator: Option<async_nats::Client>,
    /// Fired at shutdown: open live streams end, so the server's graceful stop is not held
    /// by pages left open.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Where a job's trace is shown (`Settings::trace_url`).
    pub trace_url: Option<String>,
    /// Files submitted from the page (with the operator's connection; `None` without one).
    pub uploads: Option<crate::upload::Uploads>,
}

type Shared = Arc<App>;

/// Units shown on a job's page at most (one cell each).
const MAX_CELLS: u32 = 5_000;
/// Units whose history the timeline reads at most.
const MAX_TIMELINE: usize = 400;
/// How often the live stream looks again without a change (heartbeat ages, lost nodes).
const TICK: Duration = Duration::from_millis(500);
/// Least time between two pushes of one stream: a busy fleet changes many times a second, and
/// a change must reach an open page within a second (`MIN_PUSH` + `TICK` at most).
const MIN_PUSH: Duration = Duration::from_millis(300);
/// Longest a job's page waits for its unit records and their history.
const PAGE_READS_WITHIN: Duration = Duration::from_secs(5);

pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/events", get(events))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/jobs/{id}/output", get(download))
        .route(
            "/upload",
            post(upload).layer(DefaultBodyLimit::max(upload_limit(&app))),
        )
        .route("/nodes/{id}/{action}", post(node_action))
        .route("/healthz", get(|| async { "ok" }))
        .route_layer(middleware::from_fn_with_state(app.clone(), signed_in))
        .route("/login", get(login_form).post(login))
        .layer(middleware::from_fn_with_state(app.clone(), guarded))
        .with_state(app)
}

/// Every answer: only for a host name this dashboard answers for, never framed by another
/// page, never cached (pages carry the CSRF token), no content sniffing, nothing loaded from
/// elsewhere.
async fn guarded(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if !app.gate.host_allowed(req.headers()) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers loopback names only (it has no token)",
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        h.insert(name, axum::http::HeaderValue::from_static(value));
    }
    res
}

/// Requests without the token go to the sign-in form (pages) or are refused (the rest).
async fn signed_in(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if app.gate.admits(req.headers()) || req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    if req.method() == axum::http::Method::GET && req.uri().path() != "/events" {
        return Redirect::to("/login").into_response();
    }
    (StatusCode::UNAUTHORIZED, "sign in first").into_response()
}

async fn login_form() -> Html<String> {
    Html(render::login(false))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(app): State<Shared>, Form(f): Form<Login>) -> Response {
    if !app.gate.accepts(&f.token) {
        return (StatusCode::UNAUTHORIZED, Html(render::login(true))).into_response();
    }
    let cookie = app.gate.session_cookie();
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn forms(app: &App) -> Forms<'_> {
    Forms {
        csrf: &app.gate.csrf,
        actions: app.operator.is_some(),
        upload_limit: app.uploads.as_ref().map(|u| u.limit()),
        profiles: app.ctx.config.profiles.keys().map(String::as_str).collect(),
        default_profile: &app.ctx.config.default_profile,
    }
}

/// The largest upload request body: the file's limit and room for the form's other fields.
fn upload_limit(app: &App) -> usize {
    let file = app.uploads.as_ref().map_or(0, |u| u.limit());
    usize::try_from(file.saturating_add(1 << 20)).unwrap_or(usize::MAX)
}

/// A file from the page's form becomes a job: the form's CSRF token comes first (a form
/// whose file comes before it is refused unread), the file streams to disk within the limit.
async fn upload(State(app): State<Shared>, headers: HeaderMap, mut form: Multipart) -> Response {
    let Some(uploads) = app.uploads.as_ref() else {
        return (
            StatusCode::FORBIDDEN,
            "this dashboard has no operator credentials",
        )
            .into_response();
    };
    let refuse = |status: StatusCode, why: String| (status, why).into_response();
    // Another site's page is refused before a byte of its form is read.
    if !app.gate.same_site(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "not from this dashboard's page".into(),
        );
    }
    let mut allowed = false;
    let mut choices = crate::upload::Choices::default();
    let mut received = None;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return refuse(e.status(), format!("reading the form: {e}")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "csrf" {
            let csrf = match small_field(&mut field).await {
                Ok(t) => t,
                Err(refused) => return refused,
            };
            if operator(&app, &headers, &Action { csrf }).is_err() {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "not from this dashboard's page".into(),
                );
            }
            allowed = true;
            continue;
        }
        if !allowed {
            return refuse(
                StatusCode::FORBIDDEN,
                "not from this dashboard's page".into(),
            );
        }
        match name.as_str() {
            "profile" => {
                let p = match small_field(&mut field).await {
                    Ok(t) => t,
                    Err(refused) => return refused,
                };
                choices.profile = Some(p).filter(|p| !p.is_empty());
            }
            "priority" => {
                let p = match small_field(&mut field).await {
                    Ok(t) => t,
                    Err(refused) => return refused,
                };
                match p.trim().parse::<i32>() {
                    Ok(n) => choices.priority = n,
                    Err(_) if p.trim().is_empty() => {}
                    Err(_) => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            format!("priority {p:?} is not a number"),
                        );
                    }
                }
            }
            "file" => {
                let browser_name = field.file_name().unwrap_or_default().to_owned();
                let (mut file, got) = match uploads.receiving(&browser_name).await {
                    Ok(r) => r,
                    Err(e) => return refuse(e.status(), e.to_string()),
                };
                let mut written = 0u64;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if let Err(e) = uploads.write(&mut file, &mut written, &chunk).await {
                                return refuse(e.status(), e.to_string());
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return refuse(e.status(), format!("reading the file: {e}")),
                    }
                }
                if let Err(e) = tokio::io::AsyncWriteExt::flush(&mut file).await {
                    return refuse(StatusCode::INSUFFICIENT_STORAGE, e.to_string());
                }
                received = Some(got).filter(|_| written > 0);
            }
            _ => {}
        }
    }
    let Some(got) = received else {
        return refuse(
            StatusCode::BAD_REQUEST,
            crate::upload::UploadError::NoFile.to_string(),
        );
    };
    match uploads.submit(got, choices).await {
        Ok(job) => {
            tracing::info!(job = %job, "dashboard upload submitted");
            Redirect::to("/").into_response()
        }
        Err(e) => refuse(e.status(), e.to_string()),
    }
}

/// The most a form's field other than the file may hold.
const SMALL_FIELD: usize = 256;

/// A form field other than the file, read whole up to `SMALL_FIELD` bytes.
async fn small_field(field: &mut axum::extract::multipart::Field<'_>) -> Result<String, Response> {
    let mut got = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(c)) if got.len() + c.len() <= SMALL_FIELD => got.extend_from_slice(&c),
            Ok(Some(_)) => {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a form field over {SMALL_FIELD} bytes"),
                )
                    .into_response());
            }
            Ok(None) => break,
            Err(e) => return Err((e.status(), format!("reading the form: {e}")).into_response()),
        }
    }
    String::from_utf8(got)
        .map_err(|_| (StatusCode::BAD_REQUEST, "a form field is not UTF-8").into_response())
}

/// A completed job's kept output (an upload's), streamed from the bucket.
async fn download(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Another site's page may not make this dashboard fetch whole outputs.
    if !app.gate.same_site(&headers) {
        return (StatusCode::FORBIDDEN, "not from this dashboard's page").into_response();
    }
    let Some(uploads) = app.uploads.as_ref() else {
        return (
            StatusCode::FORBIDDEN,
            "this dashboard has no operator credentials",
        )
            .into_response();
    };
    let Ok(job) = JobId::new(id.as_str()) else {
        return (StatusCode::BAD_REQUEST, "not a job id").into_response();
    };
    let rec = match app.ctx.jobs.get(job.as_str()).await {
        Ok(Some((rec, _))) => rec,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no job {job}")).into_response(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let Some(out) = rec
        .output
        .as_ref()
        .filter(|_| rec.state == JobState::Completed)
    else {
        return (StatusCode::CONFLICT, format!("{job} has not completed")).into_response();
    };
    let (file, len) = match uploads
        .fetch(&rec.request.output, out.digest.as_deref())
        .await
    {
        Ok(f) => f,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let name = rec
        .request
        .output
        .rsplit('/')
        .next()
        .map(ffleet_runtime::storage::keys::sanitize_name)
        .unwrap_or_else(|| "output.mp4".into());
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The fleet, jobs and throughput sections as they are now.
fn sections(app: &App) -> [String; 3] {
    let nodes = app.view.nodes(SystemTime::now());
    let mut live: HashMap<JobId, Live> = HashMap::new();
    // A lost node's last word counts for nothing: its units run elsewhere now.
    for (n, _, _) in nodes
        .iter()
        .filter(|(_, s, _)| *s != crate::view::NodeState::Lost)
    {
        for h in &n.beat.holding {
            let l = live.entry(h.job_id.clone()).or_default();
            l.frames = l.frames.saturating_add(h.frame);
            l.fps += h.fps.max(0.0);
        }
    }
    let fleet = render::fleet(&nodes, &forms(app)).into_string();
    let rows = app.view.jobs();
    let maps: HashMap<JobId, render::Minimap> = rows
        .iter()
        .filter(|r| !r.state.is_terminal())
        .map(|r| (r.id.clone(), app.view.cells(&r.id, render::MINIMAP_CELLS)))
        .collect();
    let jobs = render::jobs(&rows, &live, &maps, &forms(app)).into_string();
    let throughput = crate::charts::throughput(&app.view.throughput(SystemTime::now()));
    [fleet, jobs, throughput.into_string()]
}

/// The live sections' names, as the page's elements and the stream's events call them.
const SECTIONS: [&str; 3] = ["fleet", "jobs", "throughput"];

async fn overview(State(app): State<Shared>) -> Html<String> {
    app.view.want().await;
    let [fleet, jobs, throughput] = sections(&app);
    Html(render::overview(
        maud::PreEscaped(fleet),
        maud::PreEscaped(jobs),
        maud::PreEscaped(throughput),
        &forms(&app),
    ))
}

async fn events(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = app.view.changes();
    let shutdown = app.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        // Heartbeats are followed while this stream is open.
        let _watching = app.view.watching().await;
        let mut sent: [String; 3] = Default::default();
        loop {
            let now = sections(&app);
            for ((name, html), last) in SECTIONS.iter().zip(&now).zip(&mut sent) {
                if html != last {
                    if tx
                        .send(Event::default().event(*name).data(html.as_str()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last.clone_from(html);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(MIN_PUSH) => {}
                _ = shutdown.cancelled() => return,
            }
            // Awake when the next node turns lost by silence, which no watch reports.
            let quiet = app
                .view
                .next_lost_in(SystemTime::now())
                .map_or(TICK, |d| TICK.min(d + Duration::from_millis(20)));
            tokio::select! {
                c = changes.changed() => if c.is_err() { return },
                _ = tokio::time::sleep(quiet) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by `body` through a small channel; it ends when the client goes.
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

async fn job_page(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(job) = JobId::new(id.as_str()) else {
        return (StatusCode::BAD_REQUEST, "not a job id").into_response();
    };
    let Some(row) = app.view.job(&job) else {
        return (StatusCode::NOT_FOUND, format!("no job {job}")).into_response();
    };
    // Bounded: a cluster electing a leader, or records vanishing mid-read, must not hold the
    // page (it shows what it read, or the job without its map).
    let reads = async {
        let units = units_of(&app.ctx, &job).await;
        let spans = spans_of(&app.ctx, &job, &units).await;
        (units, spans)
    };
    let ((units, spans), events) = tokio::join!(
        async {
            tokio::time::timeout(PAGE_READS_WITHIN, reads)
                .await
                .unwrap_or_default()
        },
        crate::job_events::read(&app.ctx, &job, PAGE_READS_WITHIN),
    );
    Html(render::job(
        &row,
        &units,
        &spans,
        &events,
        app.trace_url.as_deref(),
        &forms(&app),
    ))
    .into_response()
}

/// Each unit's encode as its record's history says it ran: claimed (running) on a node, then
/// done, failed or handed on (or still running). Read for the first `MAX_TIMELINE` units that
/// have run: a record's few revisions each.
async fn spans_of(
    ctx: &Ctx,
    job: &JobId,
    units: &[(Unit, Option<SegmentRecord>)],
) -> Vec<render::Span> {
    let ran: Vec<Unit> = units
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.owner.is_some()))
        .map(|(u, _)| *u)
        .take(MAX_TIMELINE)
        .collect();
    let reads = ran.into_iter().map(|u| async move {
        let key = subjects::segment_key(job, u);
        let Ok(history) = ctx.segments.store().history(&key).await else {
            return Vec::new();
        };
        let entries: Vec<_> = futures::StreamExt::collect::<Vec<_>>(history).await;
        let revs: Vec<(SystemTime, SegmentRecord)> = entries
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let r =
                    ffleet_runtime::messages::decode::<SegmentRecord>("segment", &e.value).ok()?;
                Some((SystemTime::from(e.created), r))
            })
            .collect();
        render::spans_of_history(u, &revs, SystemTime::now())
    });
    let all: Vec<Vec<render::Span>> = futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter(reads),
        16,
    ))
    .await;
    all.into_iter().flatten().collect()
}

/// The job's unit records, read when its page is asked for.
async fn units_of(ctx: &Ctx, job: &JobId) -> Vec<(Unit, Option<SegmentRecord>)> {
    let Ok(Some((rec, _))) = ctx.jobs.get(job.as_str()).await else {
        return Vec::new();
    };
    let Some(plan) = rec.plan else {
        return Vec::new();
    };
    let units: Vec<Unit> = plan
        .units()
        .filter(|u| !matches!(u, Unit::Video(i) if *i >= MAX_CELLS))
        .collect();
    let reads = units.into_iter().map(|u| async move {
        let rec = ctx
            .segments
            .get(&subjects::segment_key(job, u))
            .await
            .ok()
            .flatten()
            .map(|(r, _)| r);
        (u, rec)
    });
    futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter(reads),
        16,
    ))
    .await
}

#[derive(Deserialize)]
struct Action {
    csrf: String,
}

/// The operator's connection for an action from one of this dashboard's pages, or why it is
/// refused.
fn operator<'a>(
    app: &'a App,
    headers: &HeaderMap,
    f: &Action,
) -> Result<&'a async_nats::Client, (StatusCode, &'static str)> {
    if !app.gate.action_allowed(headers, &f.csrf) {
        return Err((StatusCode::FORBIDDEN, "not from this dashboard's page"));
    }
    app.operator.as_ref().ok_or((
        StatusCode::FORBIDDEN,
        "this dashboard has no operator credentials",
    ))
}

async fn job_action(
    State(app): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<Action>,
) -> Response {
    let client = match operator(&app, &headers, &f) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    let (Ok(job), Some(action)) = (JobId::new(id.as_str()), JobAction::parse(&action)) else {
        return (StatusCode::NOT_FOUND, "no such action").into_response();
    };
    match actions::job(client, &job, action).await {
        Ok(st) => {
            tracing::info!(job = %job, action = ?action, state = ?st.state, "dashboard action");
            // A retry's new job is not on the page until its request is taken in.
            let to = match action {
                JobAction::Retry => "/".to_owned(),
                JobAction::Cancel => format!("/jobs/{job}"),
            };
            Redirect::to(&to).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{action:?} of {job}: {e}")).into_response(),
    }
}

async fn node_action(
    State(app): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<Action>,
) -> Response {
    let client = match operator(&app, &headers, &f) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    let action = match action.as_str() {
        "drain" => NodeAction::Drain,
        "undrain" => NodeAction::Undrain,
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    let Ok(node) = NodeId::new(id.as_str()) else {
        return (StatusCode::BAD_REQUEST, "not a node id").into_response();
    };
    match actions::node(client, &node, action).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{action:?} of {node}: {e}"),
        )
            .into_response(),
    }
}
