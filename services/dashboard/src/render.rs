//! The pages, as HTML compiled into the binary (maud): the overview (fleet and jobs, whose
//! sections the page replaces as the server pushes them), a job's page (its segment map), and
//! the sign-in form. Every value shown is escaped by maud; nothing is fetched from elsewhere.

use crate::view::{JobRow, Node, NodeState};
use ffleet_runtime::messages::{JobState, SegmentRecord, SegmentState};
use ffleet_runtime::{JobId, Unit};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;
use std::time::Duration;

/// The page's own style and script, embedded: nothing is fetched at run time.
const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// Finished jobs listed on the overview, newest first.
pub const FINISHED_SHOWN: usize = 50;

/// What forms need: the CSRF token, and whether actions are possible at all.
#[derive(Clone, Copy)]
pub struct Forms<'a> {
    pub csrf: &'a str,
    pub actions: bool,
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

/// The overview: the fleet and the jobs, each a section the server replaces live.
pub fn overview(fleet: Markup, jobs: Markup) -> String {
    frame(
        "fleet",
        html! {
            main data-live="events" {
                section #fleet { (fleet) }
                section #jobs { (jobs) }
            }
        },
    )
    .into_string()
}

/// The fleet section: one row per node.
pub fn fleet(nodes: &[(Node, NodeState, Duration)], forms: Forms) -> Markup {
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
pub fn jobs(rows: &[JobRow], live: &HashMap<JobId, Live>, forms: Forms) -> Markup {
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
                        " " span.sub { (r.units_done) "/" (r.units_total) " units" } }
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

fn cancel_form(job: &JobId, forms: Forms) -> Markup {
    action_form(job, "cancel", forms)
}

fn action_form(job: &JobId, action: &str, forms: Forms) -> Markup {
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
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A job's page: its state, and one cell per unit coloured by its state, naming the node
/// that holds or encoded it and the attempts it took.
pub fn job(row: &JobRow, units: &[(Unit, Option<SegmentRecord>)], forms: Forms) -> String {
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
                    @if !row.state.is_terminal() { (cancel_form(&row.id, forms)) }
                    @if matches!(row.state, JobState::Failed | JobState::Cancelled) && row.retried_as.is_none() {
                        (action_form(&row.id, "retry", forms))
                    }
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

/// A unit's cell: its state's class and what hovering it says.
fn cell(unit: Unit, rec: Option<&SegmentRecord>) -> (&'static str, String) {
    let Some(r) = rec else {
        return ("missing", format!("{unit}: no record"));
    };
    let state = match r.state {
        SegmentState::Planned => "planned",
        SegmentState::Queued => "queued",
        SegmentState::Running => "running",
        SegmentState::Done if r.reused_from.is_some() => "reused",
        SegmentState::Done => "done",
        SegmentState::Failed => "failed",
    };
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
