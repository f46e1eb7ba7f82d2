//! The throughput section: segments/s and encoded frames/s over the last 15 minutes as SVG
//! drawn here (no script, nothing fetched), the fleet's line and the busiest nodes' lines, and a
//! table of every node's totals.

use crate::throughput::{BIN, Count, Line, Series, WINDOW};
use maud::{Markup, html};

/// Nodes drawn as lines of their own; the rest are in the table only.
const LINES: usize = 6;
/// Nodes listed in the table at most.
const LISTED: usize = 50;

const W: f64 = 900.0;
const H: f64 = 140.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 18.0;

/// One chart: each line's per-bin rate (`rate` of a count per second) as a polyline.
fn chart(title: &str, unit: &str, lines: &[(&str, &Line)], rate: fn(&Count) -> f64) -> Markup {
    let per_sec = |c: &Count| rate(c) / BIN.as_secs_f64();
    let top = lines
        .iter()
        .flat_map(|(_, l)| l.counts.iter().map(per_sec))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { nice_ceiling(top) } else { 1.0 };
    let bins = lines.first().map_or(1, |(_, l)| l.counts.len().max(2));
    let x = |i: usize| LEFT + (W - LEFT - 4.0) * i as f64 / (bins - 1) as f64;
    let y = |v: f64| 4.0 + (H - BOTTOM - 4.0) * (1.0 - v / top);
    html! {
        figure.chart {
            figcaption { (title) }
            // Inline in HTML: no namespace attribute (the page names no other site).
            svg width=(W) height=(H) viewBox=(format!("0 0 {W} {H}"))
                role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(y(0.0)) x2=(W - 4.0) y2=(y(0.0)) {}
                line.grid x1=(LEFT) y1=(y(top)) x2=(W - 4.0) y2=(y(top)) {}
                text x=(LEFT - 4.0) y=(y(top) + 4.0) text-anchor="end" { (short(top)) }
                text x=(LEFT - 4.0) y=(y(0.0)) text-anchor="end" { "0" }
                text x=(LEFT) y=(H - 4.0) { "-" (WINDOW.as_secs() / 60) " min" }
                text x=(W - 4.0) y=(H - 4.0) text-anchor="end" { "now (" (unit) ")" }
                @for (i, (name, l)) in lines.iter().enumerate() {
                    @let points = l.counts.iter().enumerate()
                        .map(|(b, c)| format!("{:.1},{:.1}", x(b), y(per_sec(c))))
                        .collect::<Vec<_>>().join(" ");
                    polyline class={"series s" (i)} points=(points) {
                        title { (name) }
                    }
                }
            }
        }
    }
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The section: both charts and the table.
pub fn throughput(s: &Series) -> Markup {
    let secs = WINDOW.as_secs_f64();
    let mut lines: Vec<(&str, &Line)> = vec![("all nodes", &s.fleet)];
    lines.extend(s.nodes.iter().take(LINES).map(|(n, l)| (n.as_str(), l)));
    html! {
        h2 { "Throughput " span.count { "last " (WINDOW.as_secs() / 60) " min: "
            (s.fleet.total.segments) " segments, " (s.fleet.total.frames) " frames" } }
        div.legend {
            @for (i, (name, _)) in lines.iter().enumerate() {
                span class={"key s" (i)} { (name) } " "
            }
        }
        (chart("segments/s", "segments/s", &lines, |c| c.segments as f64))
        (chart("encoded frames/s", "frames/s", &lines, |c| c.frames as f64))
        @if !s.nodes.is_empty() {
            table.throughput {
                thead { tr { th { "node" } th { "segments" } th { "frames" } th { "segments/min" } th { "frames/s" } } }
                tbody {
                    @for (n, l) in s.nodes.iter().take(LISTED) {
                        tr data-node=(n) {
                            td { (n) }
                            td { (l.total.segments) }
                            td { (l.total.frames) }
                            td { (format!("{:.2}", l.total.segments as f64 * 60.0 / secs)) }
                            td { (format!("{:.1}", l.total.frames as f64 / secs)) }
                        }
                    }
                }
            }
            @if s.nodes.len() > LISTED { p.sub { (s.nodes.len() - LISTED) " more nodes" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round_and_cover() {
        for (v, want) in [
            (0.3, 0.5),
            (1.0, 1.0),
            (1.2, 2.0),
            (37.0, 50.0),
            (510.0, 1000.0),
        ] {
            assert!(
                (nice_ceiling(v) - want).abs() < 1e-9,
                "{v}: {}",
                nice_ceiling(v)
            );
        }
    }
}
