//! The pages, as HTML compiled into the binary (maud): the overview (fleet and jobs, whose
//! sections the page replaces as the server pushes them), a job's page (its timeline, events and
//! segment map), and the sign-in form. Every value shown is escaped by maud; nothing is fetched from elsewhere.

use crate::job_events::Events;
use crate::view::{Cell, JobRow, Node, NodeState};
use ffleet_runtime::messages::{JobState, SegmentRecord, SegmentState};
use ffleet_runtime::{JobId, Unit};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The page's own style and script, embedded: nothing is fetched at run time.
const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// Finished jobs listed on the overview, newest first.
pub const FINISHED_SHOWN: usize = 50;

/// What forms need: the CSRF token, whether actions are possible at all, and what the upload
/// form offers.
#[derive(Clone)]
pub struct Forms<'a> {
    pub csrf: &'a str,
    pub actions: bool,
    /// The most a file may be (`None`: no upload form).
    pub upload_limit: Option<u64>,
    pub profiles: Vec<&'a str>,
    pub default_profile: &'a str,
}

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "ffleet" } span.sub { (title) } }
                (body)
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// The overview: the fleet, the jobs and the throughput, each a section the server replaces
/// live.
pub fn overview(fleet: Markup, jobs: Markup, throughput: Markup, forms: &Forms) -> String {
    frame(
        "fleet",
        html! {
            main data-live="events" {
                section #fleet { (fleet) }
                // Not a live section: replacing it would drop a file being chosen.
                @if let Some(limit) = forms.upload_limit { section #submit { (upload_form(forms, limit)) } }
                section #jobs { (jobs) }
                section #throughput { (throughput) }
            }
        },
    )
    .into_string()
}

/// A file to transcode, sent through the media bucket (as `ffleet submit --upload`).
fn upload_form(forms: &Forms, limit: u64) -> Markup {
    html! {
        h2 { "Submit a file " span.count { "up to " (mib(limit)) } }
        form.upload method="post" action="/upload" enctype="multipart/form-data" {
            // First, so the server checks it before it reads the file.
            input type="hidden" name="csrf" value=(forms.csrf);
            label { "profile " select name="profile" {
                @for p in &forms.profiles {
                    option value=(p) selected[*p == forms.default_profile] { (p) }
                }
            } } " "
            label { "priority " input type="number" name="priority" value="0" min="-100" max="100" step="1"; } " "
            input type="file" name="file" required;
            " "
            button { "submit" }
        }
    }
}

/// The fleet section: one row per node.
pub fn fleet(nodes: &[(Node, NodeState, Duration)], forms: &Forms) -> Markup {
    html! {
        h2 { "Fleet " span.count { (nodes.len()) " nodes" } }
        table.nodes {
            thead { tr {
                th { "node" } th { "state" } th { "capabilities" } th { "gpu" }
                th { "slots" } th { "running" } th { "heartbeat" } th {}
            } }
            tbody {
                @for (n, state, age) in nodes {
                    @let b = &n.beat;
                    tr.node data-node=(b.node_id) data-state=(state.name()) {
                        td { (b.node_id) br; span.sub { (b.host) } }
                        td { span class={"state " (state.name())} { (state.name()) } }
                        td { @for c in &b.capabilities {
                            @let demoted = b.demoted.contains(c);
                            span class={"cap " (if demoted { "demoted" } else { "proven" })}
                                title=(if demoted { "demoted: its test encode failed" } else { "proven by a test encode" }) { (c) }
                            " "
                        } }
                        td { @if let Some(g) = &b.gpu_class { (g) } @else { "-" } }
                        td { (b.slots_busy) "/" (b.slots_total)
                             @if b.gpu_slots_total > 0 { br; span.sub { "gpu " (b.gpu_slots_busy) "/" (b.gpu_slots_total) } } }
                        td { @for h in &b.holding {
                            div.held { a href={"/jobs/" (h.job_id)} { (h.job_id) } " " (h.unit)
                                " " span.sub { "frame " (h.frame) ", " (format!("{:.0}", h.fps)) " fps" } }
                        } }
                        td { (format!("{:.1}", age.as_secs_f64())) " s" }
                        td { @if forms.actions && *state != NodeState::Lost {
                            @let action = if b.draining { "undrain" } else { "drain" };
                            form method="post" action={"/nodes/" (b.node_id) "/" (action)} {
                                input type="hidden" name="csrf" value=(forms.csrf);
                                button { (action) }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// A job that encodes now on some node (its units in heartbeats), with those units' live
/// frames and speed.
#[derive(Default, Clone, Copy)]
pub struct Live {
    pub frames: u64,
    pub fps: f64,
}

/// The jobs section: queued by priority, running with progress, the latest finished.
/// A running job's segment map as the overview shows it: its first units, and how many it
/// has in all.
pub type Minimap = (Vec<(Unit, Cell)>, usize);

/// Units a running job's row shows at most (its page shows them all).
pub const MINIMAP_CELLS: usize = 60;

pub fn jobs(
    rows: &[JobRow],
    live: &HashMap<JobId, Live>,
    maps: &HashMap<JobId, Minimap>,
    forms: &Forms,
) -> Markup {
    let mut queued: Vec<&JobRow> = Vec::new();
    let mut running: Vec<&JobRow> = Vec::new();
    let mut finished: Vec<&JobRow> = Vec::new();
    for r in rows {
        match r.state {
            s if s.is_terminal() => finished.push(r),
            JobState::Splitting | JobState::Encoding if !live.contains_key(&r.id) => queued.push(r),
            _ => running.push(r),
        }
    }
    queued.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    running.sort_by(|a, b| a.id.cmp(&b.id));
    finished.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    finished.truncate(FINISHED_SHOWN);
    html! {
        h2 { "Running " span.count { (running.len()) } }
        table.jobs { tbody {
            @for r in &running {
                @let l = live.get(&r.id).copied().unwrap_or_default();
                @let done = r.frames_done.saturating_add(l.frames).min(r.frames_total);
                @let pct = if r.frames_total > 0 { 100.0 * done as f64 / r.frames_total as f64 } else { 0.0 };
                tr.job data-job=(r.id) data-state=(r.state.name()) {
                    td { a href={"/jobs/" (r.id)} { (r.id) } }
                    td { (r.state.name()) }
                    td.progress { progress max="100" value=(format!("{pct:.1}")) {} " " span.pct { (format!("{pct:.0}")) "%" }
                        " " span.sub { (r.units_done) "/" (r.units_total) " units" }
                        @if let Some((cells, all)) = maps.get(&r.id).filter(|(c, _)| !c.is_empty()) {
                            div.segmap.mini {
                                @for (unit, c) in cells {
                                    @let (state, title) = mini_cell(*unit, c);
                                    span class={"cell " (state)} title=(title) {}
                                }
                                @if *all > cells.len() { span.sub { " +" (all - cells.len()) } }
                            }
                        } }
                    td { (format!("{:.0}", l.fps)) " fps" }
                    td { (eta(r.frames_total.saturating_sub(done), l.fps)) }
                    td { (cancel_form(&r.id, forms)) }
                }
            }
        } }
        h2 { "Queued " span.count { (queued.len()) } }
        table.jobs { tbody {
            @for r in &queued {
                tr.job data-job=(r.id) data-state=(r.state.name()) {
                    td { a href={"/jobs/" (r.id)} { (r.id) } }
                    td { "priority " (r.priority) }
                    td { (r.state.name()) }
                    td { (cancel_form(&r.id, forms)) }
                }
            }
        } }
        h2 { "Finished " span.count { (finished.len()) } }
        table.jobs { tbody {
            @for r in &finished {
                tr.job data-job=(r.id) data-state=(r.state.name()) {
                    td { a href={"/jobs/" (r.id)} { (r.id) } }
                    td { span class={"state " (r.state.name())} { (r.state.name()) } }
                    td {
                        @if let Some(b) = r.output_bytes { (mib(b)) }
                        @if let Some(s) = r.speed { " " (format!("{s:.1}")) "× real time" }
                        @if let Some(why) = &r.reason { span.reason { (why) } }
                        @if let Some(again) = &r.retried_as { " retried as " a href={"/jobs/" (again)} { (again) } }
                    }
                    td { @if matches!(r.state, JobState::Failed | JobState::Cancelled) && r.retried_as.is_none() {
                        (action_form(&r.id, "retry", forms))
                    } }
                }
            }
        } }
    }
}

fn cancel_form(job: &JobId, forms: &Forms) -> Markup {
    action_form(job, "cancel", forms)
}

fn action_form(job: &JobId, action: &str, forms: &Forms) -> Markup {
    html! {
        @if forms.actions {
            form method="post" action={"/jobs/" (job) "/" (action)} {
                input type="hidden" name="csrf" value=(forms.csrf);
                button { (action) }
            }
        }
    }
}

/// Time left at `fps` for `frames`, or a dash.
fn eta(frames: u64, fps: f64) -> String {
    if fps <= 0.0 {
        return "-".into();
    }
    let secs = (frames as f64 / fps).round() as u64;
    format!("{}:{:02} left", secs / 60, secs % 60)
}

fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// One attempt of a unit on a node, from its claim to its end (or now).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub unit: Unit,
    pub node: String,
    pub attempt: u32,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `done`, `failed`, `running` or `handed-on` (released, re-issued).
    pub outcome: &'static str,
}

/// The attempts a unit record's revisions (oldest first, each with when it was written) show:
/// each claim (`running` with an owner) to the next revision of another state or attempt.
pub fn spans_of_history(
    unit: Unit,
    revs: &[(SystemTime, SegmentRecord)],
    now: SystemTime,
) -> Vec<Span> {
    let mut out = Vec::new();
    let mut open: Option<(SystemTime, &SegmentRecord)> = None;
    for (at, r) in revs {
        if let Some((start, claimed)) = open
            && (r.attempt != claimed.attempt || r.state != SegmentState::Running)
        {
            let outcome = match (r.attempt == claimed.attempt, r.state) {
                (true, SegmentState::Done) => "done",
                (true, SegmentState::Failed) => "failed",
                _ => "handed-on",
            };
            out.push(Span {
                unit,
                node: claimed.owner.as_ref().map_or("-".into(), |n| n.to_string()),
                attempt: claimed.attempt,
                start,
                end: *at,
                outcome,
            });
            open = None;
        }
        if r.state == SegmentState::Running && r.owner.is_some() && open.is_none() {
            open = Some((*at, r));
        }
    }
    if let Some((start, claimed)) = open {
        out.push(Span {
            unit,
            node: claimed.owner.as_ref().map_or("-".into(), |n| n.to_string()),
            attempt: claimed.attempt,
            start,
            end: now.max(start),
            outcome: "running",
        });
    }
    out
}

/// The job's timeline as SVG: one row per node, each attempt a bar over time.
fn timeline(spans: &[Span]) -> Markup {
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 22.0;
    const LABEL: f64 = 120.0;
    let Some(t0) = spans.iter().map(|s| s.start).min() else {
        return html! { p.sub { "no unit has run yet" } };
    };
    let t1 = spans.iter().map(|s| s.end).max().unwrap_or(t0);
    let total = t1
        .duration_since(t0)
        .unwrap_or_default()
        .as_secs_f64()
        .max(0.001);
    let mut nodes: Vec<&str> = spans.iter().map(|s| s.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let height = ROW * nodes.len() as f64 + 20.0;
    let x = |t: SystemTime| {
        LABEL + (WIDTH - LABEL) * t.duration_since(t0).unwrap_or_default().as_secs_f64() / total
    };
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(height)
            viewBox=(format!("0 0 {WIDTH} {height}")) {
            @for (row, node) in nodes.iter().enumerate() {
                @let y = ROW * row as f64;
                text x="4" y=(format!("{:.1}", y + 15.0)) { (node) }
                @for s in spans.iter().filter(|s| s.node == *node) {
                    @let (a, b) = (x(s.start), x(s.end));
                    rect class={"bar " (s.outcome)} x=(format!("{a:.1}")) y=(format!("{:.1}", y + 3.0))
                        width=(format!("{:.1}", (b - a).max(2.0))) height=(format!("{:.1}", ROW - 6.0)) {
                        title { (s.unit) " attempt " (s.attempt) ": " (s.outcome) ", "
                            (format!("{:.2}", s.end.duration_since(s.start).unwrap_or_default().as_secs_f64())) " s" }
                    }
                }
            }
            text x=(LABEL) y=(format!("{:.1}", height - 4.0)) { "0 s" }
            text x=(WIDTH - 4.0) y=(format!("{:.1}", height - 4.0)) text-anchor="end" { (format!("{total:.1} s")) }
        }
    }
}

/// A job's page: its state, its timeline, and one cell per unit coloured by its state, naming
/// the node that holds or encoded it and the attempts it took.
pub fn job(
    row: &JobRow,
    units: &[(Unit, Option<SegmentRecord>)],
    spans: &[Span],
    events: &Events,
    trace_url: Option<&str>,
    forms: &Forms,
) -> String {
    frame(
        row.id.as_str(),
        html! {
            main {
                section {
                    h2 { (row.id) " " span class={"state " (row.state.name())} { (row.state.name()) } }
                    p { "profile " (row.profile) ", priority " (row.priority) ", "
                        (row.units_done) "/" (row.units_total) " units, "
                        (row.frames_done) "/" (row.frames_total) " frames" }
                    @if let Some(why) = &row.reason { p.reason { (why) } }
                    @if let Some(id) = &events.trace_id {
                        p.trace { "trace " @match trace_url {
                            Some(url) => a href=(url.replace("{trace_id}", id)) rel="noopener noreferrer" { (id) },
                            None => code { (id) },
                        } }
                    }
                    @if !row.state.is_terminal() { (cancel_form(&row.id, forms)) }
                    @if row.state == JobState::Completed && row.output_kept && forms.actions {
                        p { a.download href={"/jobs/" (row.id) "/output"} { "download the output" } }
                    }
                    @if matches!(row.state, JobState::Failed | JobState::Cancelled) && row.retried_as.is_none() {
                        (action_form(&row.id, "retry", forms))
                    }
                }
                section {
                    h3 { "Timeline" }
                    (timeline(spans))
                }
                section {
                    h3 { "Events" }
                    (events_table(events))
                }
                section {
                    h3 { "Segments" }
                    div.segmap {
                        @for (unit, rec) in units {
                            @let (state, title) = cell(*unit, rec.as_ref());
                            span class={"cell " (state)} title=(title) data-unit=(unit) {}
                        }
                    }
                }
            }
        },
    )
    .into_string()
}

/// The job's events, oldest first.
fn events_table(events: &Events) -> Markup {
    html! {
        @if events.rows.is_empty() {
            p.sub { "no event of this job is stored" }
        } @else {
            table.events { tbody {
                @for r in &events.rows {
                    tr data-kind=(r.kind) { td.sub { (r.at) } td { (r.kind) } td { (r.text) } }
                }
            } }
        }
        p.sub { "the last progress is listed; segment reports are on the timeline" }
    }
}

/// A unit's cell in a running job's row: its state's class, and the node and attempts.
fn mini_cell(unit: Unit, c: &Cell) -> (&'static str, String) {
    let state = state_class(c.state, c.reused);
    let node = c.node.as_ref().map_or("-", |n| n.as_str());
    (
        state,
        format!("{unit}: {state}, node {node}, attempt {}", c.attempt),
    )
}

fn state_class(state: SegmentState, reused: bool) -> &'static str {
    match state {
        SegmentState::Planned => "planned",
        SegmentState::Queued => "queued",
        SegmentState::Running => "running",
        SegmentState::Done if reused => "reused",
        SegmentState::Done => "done",
        SegmentState::Failed => "failed",
    }
}

/// A unit's cell: its state's class and what hovering it says.
fn cell(unit: Unit, rec: Option<&SegmentRecord>) -> (&'static str, String) {
    let Some(r) = rec else {
        return ("missing", format!("{unit}: no record"));
    };
    let state = state_class(r.state, r.reused_from.is_some());
    let node = r.owner.as_ref().map_or("-", |n| n.as_str());
    (
        state,
        format!("{unit}: {state}, node {node}, attempt {}", r.attempt),
    )
}

/// The sign-in form (a dashboard listening beyond loopback asks for its token).
pub fn login(failed: bool) -> String {
    frame(
        "sign in",
        html! {
            main {
                form.login method="post" action="/login" {
                    label { "Token " input type="password" name="token" autocomplete="current-password"; }
                    button { "Sign in" }
                    @if failed { p.reason { "That token is not this dashboard's." } }
                }
            }
        },
    )
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::NodeId;

    fn rev(
        secs: u64,
        attempt: u32,
        state: SegmentState,
        owner: Option<&str>,
    ) -> (SystemTime, SegmentRecord) {
        let mut r = SegmentRecord::planned(None);
        r.attempt = attempt;
        r.state = state;
        r.owner = owner.map(|o| NodeId::new(o).unwrap());
        (SystemTime::UNIX_EPOCH + Duration::from_secs(secs), r)
    }

    #[test]
    fn a_units_history_gives_one_bar_per_attempt_that_ran() {
        use SegmentState::*;
        let revs = [
            rev(0, 1, Planned, None),
            rev(1, 1, Queued, None),
            rev(2, 1, Running, Some("n1")),
            rev(4, 2, Planned, None),
            rev(5, 2, Running, Some("n2")),
            rev(9, 2, Done, Some("n2")),
        ];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let spans = spans_of_history(Unit::Video(3), &revs, now);
        let got: Vec<(&str, u32, u64, u64, &str)> = spans
            .iter()
            .map(|s| {
                let t = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
                (s.node.as_str(), s.attempt, t(s.start), t(s.end), s.outcome)
            })
            .collect();
        assert_eq!(got, [("n1", 1, 2, 4, "handed-on"), ("n2", 2, 5, 9, "done")]);
        // Still running: its bar ends now.
        let spans = spans_of_history(Unit::Audio, &revs[..3], now);
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].end, spans[0].outcome), (now, "running"));
        let svg = timeline(&spans).into_string();
        assert!(svg.starts_with("<svg") && svg.contains("n1"), "{svg}");
    }
}
