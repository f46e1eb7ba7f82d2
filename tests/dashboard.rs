//! The web dashboard (`ffleet dashboard`) against a real fleet (nats-server, the services as
//! processes, ffmpeg), spoken to over HTTP as a browser does: the page lists the node; the live
//! stream shows a running job's progress advancing; a cancel from the page (with the page's
//! CSRF token, and refused without it) stops the job with one `cancelled` event; a SIGKILLed
//! encoder shows as lost within the heartbeat TTL + 1 s; and beyond loopback nothing is served
//! without the token.

mod common;
#[path = "common/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use anyhow::{Context, Result, bail, ensure};
use common::JobClient;
use common::media;
use common::procs::ProcFleet;
use ffleet_runtime::messages::{JobEvent, JobState};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A dashboard process, killed on drop.
struct Dashboard {
    child: Child,
    addr: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `ffleet dashboard ARGS` on `host` and waits until it answers.
async fn dashboard(fleet: &ProcFleet, host: &str, args: &[&str]) -> Result<Dashboard> {
    dashboard_with(fleet, host, args, &[]).await
}

/// `dashboard` with more settings in its environment (`env`: another role's credentials).
async fn dashboard_with(
    fleet: &ProcFleet,
    host: &str,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> Result<Dashboard> {
    let port = free_port()?;
    let listen = format!("{host}:{port}");
    let child = fleet
        .command()
        .args(["dashboard", "--listen", &listen])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let d = Dashboard {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&d, "/healthz", &[]).await.is_err() {
        ensure!(Instant::now() < deadline, "the dashboard did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(d)
}

/// A response: status and body.
struct Reply {
    status: u16,
    headers: String,
    body: String,
    /// The body's length in bytes, as it came.
    body_len: usize,
}

/// One HTTP/1.1 request, as a browser would send it (`extra` headers), read to its end.
async fn send(
    d: &Dashboard,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &str,
) -> Result<Reply> {
    let mut s = TcpStream::connect(&d.addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        d.addr
    );
    for h in extra {
        req += h;
        req += "\r\n";
    }
    if !body.is_empty() {
        req += "Content-Type: application/x-www-form-urlencoded\r\n";
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    reply(&raw)
}

fn reply(raw: &[u8]) -> Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = &raw[end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok(Reply {
        status,
        headers: head,
        body: String::from_utf8_lossy(body).into_owned(),
        body_len: body.len(),
    })
}

async fn get(d: &Dashboard, path: &str, extra: &[&str]) -> Result<Reply> {
    send(d, "GET", path, extra, "").await
}

/// The live stream's events as (name, data), read as they come.
struct Live {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Live {
    async fn open(d: &Dashboard) -> Result<Live> {
        let mut s = TcpStream::connect(&d.addr).await?;
        let req = format!(
            "GET /events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            d.addr
        );
        s.write_all(req.as_bytes()).await?;
        Ok(Live {
            lines: BufReader::new(s).lines(),
        })
    }

    /// The next event, within `within`. (Chunked transfer: chunk sizes come as lines of
    /// their own and are skipped.)
    async fn next(&mut self, within: Duration) -> Result<(String, String)> {
        let (mut name, mut data) = (String::new(), String::new());
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .context("no event in time")??
                .context("stream ended")?;
            if let Some(n) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                name = n.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data += v;
            } else if line.is_empty() && !name.is_empty() {
                return Ok((name, data));
            }
        }
    }

    /// Reads events until `name`'s data satisfies `check`.
    async fn until(
        &mut self,
        name: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "no {name} event as awaited within {within:?}"
            );
            let (n, data) = self.next(left).await?;
            if n == name && check(&data) {
                return Ok(data);
            }
        }
    }
}

/// The progress shown for `job` in a jobs section (`value="12.3"` of its bar).
fn progress_of(html: &str, job: &str) -> Option<f64> {
    let row = html.split(&format!("data-job=\"{job}\"")).nth(1)?;
    let row = row.split("</tr>").next()?;
    row.split("value=\"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()
}

fn csrf_of(page: &str) -> Result<String> {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
        .context("no csrf token on the page")
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_live_and_acts_for_the_operator() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[]).await?;
    let d = dashboard(&fleet, "127.0.0.1", &[]).await?;
    let page = get(&d, "/", &[]).await?;
    ensure!(page.status == 200, "GET / answered {}", page.status);
    ensure!(
        page.body.contains("data-node=\"enc-1\""),
        "no node on the page"
    );
    // Without a token only loopback names are answered: a page elsewhere whose name was
    // rebound to 127.0.0.1 names its own host.
    let mut s = TcpStream::connect(&d.addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    ensure!(
        raw.starts_with(b"HTTP/1.1 421"),
        "a rebound name was answered: {}",
        String::from_utf8_lossy(&raw[..raw.len().min(40)])
    );
    ensure!(
        page.headers
            .to_ascii_lowercase()
            .contains("x-frame-options: deny")
    );
    ensure!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page fetches from elsewhere"
    );

    // A running job's progress advances on the live stream.
    let mut live = Live::open(&d).await?;
    let src = media::ntsc_source(&fleet.media(), "src.mp4", 12, "640x360")?;
    let mut req = fleet.request("job", &src, "job.mp4");
    req.segment_seconds = Some(2.0);
    fleet.submit(&req).await?;
    let first = live
        .until("jobs", Duration::from_secs(60), |h| {
            progress_of(h, "job").is_some_and(|p| p > 0.0)
        })
        .await?;
    let p1 = progress_of(&first, "job").unwrap_or(0.0);
    // ...and its row carries its segment map, units coloured by state.
    let later = live
        .until("jobs", Duration::from_secs(60), |h| {
            progress_of(h, "job").is_some_and(|p| p > p1)
                && h.contains("class=\"segmap mini\"")
                && h.contains("class=\"cell done\"")
        })
        .await?;
    println!(
        "progress on the page: {p1:.1}% then {:.1}%",
        progress_of(&later, "job").unwrap_or(0.0)
    );

    // A cancel without the page's token is refused; with it, the job stops.
    let forged = send(&d, "POST", "/jobs/job/cancel", &[], "csrf=guess").await?;
    ensure!(
        forged.status == 403,
        "a forged cancel answered {}",
        forged.status
    );
    let cross = send(
        &d,
        "POST",
        "/jobs/job/cancel",
        &["Origin: https://evil.example"],
        &format!("csrf={}", csrf_of(&page.body)?),
    )
    .await?;
    ensure!(
        cross.status == 403,
        "a cross-origin cancel answered {}",
        cross.status
    );
    ensure!(fleet.job("job").await.map(|r| r.state) != Some(JobState::Cancelled));
    let page = get(&d, "/", &[]).await?;
    let csrf = csrf_of(&page.body)?;
    let cancel = send(&d, "POST", "/jobs/job/cancel", &[], &format!("csrf={csrf}")).await?;
    ensure!(
        cancel.status == 303,
        "cancel answered {}: {}",
        cancel.status,
        cancel.body
    );
    match fleet.wait_terminal("job", Duration::from_secs(30)).await? {
        JobEvent::Cancelled(_) => {}
        other => bail!("the job ended {other:?}"),
    }
    ensure!(
        fleet.terminal_count("job").await? == 1,
        "more than one terminal event"
    );
    live.until("jobs", Duration::from_secs(5), |h| {
        h.contains("data-job=\"job\" data-state=\"cancelled\"")
    })
    .await?;
    let job_page = get(&d, "/jobs/job", &[]).await?;
    ensure!(
        job_page.status == 200 && job_page.body.contains("class=\"cell "),
        "no segment map"
    );

    // A SIGKILLed encoder shows as lost within the heartbeat TTL + 1 s.
    let ttl = fleet_ttl();
    let enc = fleet.services_named("encoder")[0];
    fleet.kill(enc);
    let killed = Instant::now();
    live.until("fleet", ttl + Duration::from_secs(2), |h| {
        h.contains("data-node=\"enc-1\" data-state=\"lost\"")
    })
    .await?;
    let took = killed.elapsed();
    println!(
        "lost on the page {:.2} s after the kill (TTL {:.1} s)",
        took.as_secs_f64(),
        ttl.as_secs_f64()
    );
    ensure!(took <= ttl + Duration::from_secs(1), "lost after {took:?}");
    fleet.passed();
    Ok(())
}

/// The heartbeat TTL the test fleet runs with (the default).
fn fleet_ttl() -> Duration {
    ffleet_runtime::config::Config::default()
        .fleet
        .heartbeat_ttl()
}

#[tokio::test]
async fn beyond_loopback_nothing_is_served_without_the_token() -> Result<()> {
    let fleet = ProcFleet::start(&[]).await?;
    // No token: it refuses to start.
    let out = fleet
        .command()
        .args([
            "dashboard",
            "--listen",
            &format!("0.0.0.0:{}", free_port()?),
        ])
        .output()?;
    ensure!(
        !out.status.success(),
        "it served beyond loopback without a token"
    );
    ensure!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("dashboard.token");
    std::fs::write(&token, "t0ken-for-the-test\n")?;
    let d = dashboard(
        &fleet,
        "0.0.0.0",
        &["--token-file", &token.to_string_lossy()],
    )
    .await?;
    let page = get(&d, "/", &[]).await?;
    ensure!(
        page.status == 303 && page.headers.contains("/login"),
        "GET / answered {}",
        page.status
    );
    ensure!(get(&d, "/events", &[]).await?.status == 401);
    let post = send(&d, "POST", "/jobs/x/cancel", &[], "csrf=x").await?;
    ensure!(
        post.status == 401,
        "a POST without the token answered {}",
        post.status
    );
    let wrong = send(&d, "POST", "/login", &[], "token=guess").await?;
    ensure!(wrong.status == 401);
    let bearer = get(&d, "/", &["Authorization: Bearer t0ken-for-the-test"]).await?;
    ensure!(bearer.status == 200, "with the token: {}", bearer.status);
    let login = send(&d, "POST", "/login", &[], "token=t0ken-for-the-test").await?;
    ensure!(
        login.status == 303 && login.headers.contains("HttpOnly"),
        "{}",
        login.headers
    );
    // The cookie signs the browser in without holding the token.
    let session = set_cookie(&login.headers)?;
    ensure!(!session.contains("t0ken"), "the cookie holds the token");
    let cookie = get(&d, "/", &[&format!("Cookie: {session}")]).await?;
    ensure!(
        cookie.status == 200,
        "with the session cookie: {}",
        cookie.status
    );
    let raw = get(&d, "/", &["Cookie: ffleet_token=t0ken-for-the-test"]).await?;
    ensure!(
        raw.status == 303,
        "a cookie of the token itself answered {}",
        raw.status
    );
    Ok(())
}

/// The `name=value` of a response's `Set-Cookie`.
fn set_cookie(headers: &str) -> Result<String> {
    headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or_default().to_owned())
        })
        .context("no Set-Cookie")
}

/// In a secured fleet the dashboard reads as the `viewer` role, which suffices (no permission
/// violation in the server's log), and without the operator's credentials offers no action.
/// A finished job's page lists its events and links its trace (the one the collector got) to
/// the tracing UI; the throughput section counts its segments for the node that encoded them.
#[tokio::test]
async fn a_secured_dashboard_reads_as_the_viewer_and_offers_no_action_without_an_operator()
-> Result<()> {
    let collector = otlp::Receiver::start().await?;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut fleet = ProcFleet::standard_secure(1, &otel).await?;
    let secure = fleet.secure.as_ref().context("a secured fleet")?;
    let seed = secure.secrets.seed(ffleet_runtime::security::Role::Viewer);
    let viewer = std::path::Path::new("viewer");
    let env = [
        ("FFLEET_NATS__NKEY_SEED_FILE", seed.as_path()),
        ("FFLEET_NATS__ROLE", viewer),
    ];
    let trace_ui = "http://traces.example/trace/{trace_id}";
    let d = dashboard_with(&fleet, "127.0.0.1", &["--trace-url", trace_ui], &env).await?;
    let page = get(&d, "/", &[]).await?;
    ensure!(page.status == 200 && page.body.contains("data-node=\"enc-1\""));
    ensure!(
        !page.body.contains("<form"),
        "actions offered without an operator"
    );
    let post = send(&d, "POST", "/nodes/enc-1/drain", &[], "csrf=x").await?;
    ensure!(post.status == 403, "a drain answered {}", post.status);

    let src = media::ntsc_source(&fleet.media(), "src.mp4", 4, "320x240")?;
    let mut req = fleet.request("done", &src, "done.mp4");
    req.segment_seconds = Some(2.0);
    fleet.submit(&req).await?;
    match fleet.wait_terminal("done", Duration::from_secs(90)).await? {
        JobEvent::Completed(_) => {}
        other => bail!("the job ended {other:?}"),
    }
    let job = get(&d, "/jobs/done", &[]).await?;
    ensure!(job.status == 200, "the job's page answered {}", job.status);
    for kind in ["accepted", "completed"] {
        ensure!(
            job.body.contains(&format!("data-kind=\"{kind}\"")),
            "no {kind} event on the job's page"
        );
    }
    let link = job
        .body
        .split("href=\"http://traces.example/trace/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("no trace link on the job's page")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !collector.spans().iter().any(|s| s.trace_id == link) {
        ensure!(
            Instant::now() < deadline,
            "the linked trace {link} is not one the collector received"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Throughput: the job's segments, counted for the node that encoded them.
    let page = get(&d, "/", &[]).await?;
    let row = page
        .body
        .split("<section id=\"throughput\">")
        .nth(1)
        .and_then(|t| t.split("data-node=\"enc-1\"").nth(1))
        .context("no throughput row for enc-1")?;
    // The row's cells: node, segments, frames, ...
    let segments: u64 = row
        .split("<td>")
        .nth(2)
        .and_then(|c| c.split('<').next())
        .and_then(|n| n.parse().ok())
        .context("no segment count")?;
    ensure!(segments >= 2, "{segments} segments counted for enc-1");
    let violations = fleet
        .secure
        .as_ref()
        .map(|s| s.violations())
        .unwrap_or_default();
    ensure!(violations.is_empty(), "{violations:#?}");
    fleet.passed();
    Ok(())
}

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Evaluates `script` (which returns a value) in the page.
async fn eval(c: &fantoccini::Client, script: &str) -> Result<serde_json::Value> {
    Ok(c.execute(script, Vec::new()).await?)
}

/// Polls `script` in the page until it returns true, for at most `within`.
async fn page_until(
    c: &fantoccini::Client,
    within: Duration,
    what: &str,
    script: &str,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if eval(c, script).await?.as_bool() == Some(true) {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the browser test leaves its screenshots (docs/images/ holds copies).
fn shots_dir() -> Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-shots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Debian's chromium, headless, driven through chromedriver (WebDriver) as an operator's
/// browser: the page updates itself (a job's progress advances, a killed node turns lost)
/// without reloading, the cancel button stops the job, and a file chosen in the upload form
/// runs to completion with its output offered for download.
#[tokio::test]
async fn in_a_real_browser_the_page_lives_and_cancels() -> Result<()> {
    for tool in ["chromium", "chromedriver"] {
        ensure!(
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok(),
            "{tool} is not installed (scripts/setup.sh installs chromium and chromium-driver)"
        );
    }
    // Over the object store, where the page's uploads go.
    let mut fleet = ProcFleet::standard(2, &[("FFLEET_STORAGE__BACKEND", "object-store")]).await?;
    let d = dashboard(&fleet, "127.0.0.1", &[]).await?;
    let port = free_port()?;
    let driver = Driver(
        std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,800"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps.clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "chromedriver not ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("no browser session: {e}"),
        }
    };
    let url = format!("http://{}/", d.addr);
    c.goto(&url).await?;
    page_until(
        &c,
        Duration::from_secs(10),
        "both nodes on the page",
        "return document.querySelectorAll('tr.node[data-state=\"ready\"]').length == 2",
    )
    .await?;

    let src = media::ntsc_source(&fleet.media(), "src.mp4", 12, "640x360")?;
    let mut req = fleet.request("job", &src, "job.mp4");
    req.segment_seconds = Some(2.0);
    fleet.submit(&req).await?;
    let bar = "document.querySelector('tr[data-job=\"job\"] progress')";
    page_until(
        &c,
        Duration::from_secs(60),
        "the job's progress on the page",
        &format!("var b = {bar}; return !!b && b.value > 0"),
    )
    .await?;
    let first: f64 = eval(&c, &format!("return {bar}.value"))
        .await?
        .as_f64()
        .unwrap_or(0.0);
    page_until(
        &c,
        Duration::from_secs(60),
        "the progress advancing without a reload",
        &format!("var b = {bar}; return !!b && b.value > {first}"),
    )
    .await?;
    let shots = shots_dir()?;
    std::fs::write(shots.join("fleet.png"), c.screenshot().await?)?;

    // The job's page, then back; the cancel button in its row stops it.
    c.goto(&format!("{url}jobs/job")).await?;
    page_until(
        &c,
        Duration::from_secs(5),
        "the segment map and the timeline",
        "return document.querySelectorAll('.cell').length > 0 \
         && document.querySelectorAll('svg.timeline rect').length > 0",
    )
    .await?;
    std::fs::write(shots.join("job.png"), c.screenshot().await?)?;
    c.goto(&url).await?;
    page_until(
        &c,
        Duration::from_secs(10),
        "the job's row",
        &format!("return !!{bar}"),
    )
    .await?;
    // The live stream replaces the section under the pointer now and then: a button found
    // just before is then gone, and is looked up again, as a user would click again.
    let button = fantoccini::Locator::Css("tr[data-job=\"job\"] form[action$=\"/cancel\"] button");
    let mut tries = 0;
    loop {
        let clicked = match c.find(button).await {
            Ok(b) => b.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => break,
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!(error = %e, "cancel button replaced, clicking again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("cannot click cancel: {e}"),
        }
    }
    match fleet.wait_terminal("job", Duration::from_secs(30)).await? {
        JobEvent::Cancelled(_) => {}
        other => bail!("the job ended {other:?}"),
    }
    ensure!(
        fleet.terminal_count("job").await? == 1,
        "more than one terminal event"
    );

    // A SIGKILLed node turns lost on the open page within the TTL + 1 s.
    c.goto(&url).await?;
    let enc = fleet.services_named("encoder")[1];
    fleet.kill(enc);
    let took = page_until(
        &c,
        fleet_ttl() + Duration::from_secs(1),
        "the killed node shown lost",
        "return !!document.querySelector('tr.node[data-node=\"enc-2\"][data-state=\"lost\"]')",
    )
    .await?;
    println!(
        "browser: enc-2 lost on the page {:.2} s after the kill",
        took.as_secs_f64()
    );

    // A file chosen on the page runs to completion on the node left, and its output is
    // offered for download.
    let clip = media::ntsc_source(&fleet.media(), "clip.mp4", 2, "320x240")?;
    c.find(fantoccini::Locator::Css("form.upload input[type=file]"))
        .await?
        .send_keys(&clip.to_string_lossy())
        .await?;
    c.find(fantoccini::Locator::Css("form.upload button"))
        .await?
        .click()
        .await?;
    let row = "document.querySelector('tr[data-job^=\"clip-\"]')";
    page_until(
        &c,
        Duration::from_secs(30),
        "the uploaded file's job on the page",
        &format!("return !!{row}"),
    )
    .await?;
    let job = eval(&c, &format!("return {row}.getAttribute('data-job')"))
        .await?
        .as_str()
        .context("no job id")?
        .to_owned();
    let done = match fleet.wait_terminal(&job, Duration::from_secs(90)).await? {
        JobEvent::Completed(done) => done,
        other => bail!("the uploaded job ended {other:?}"),
    };
    c.goto(&format!("{url}jobs/{job}")).await?;
    page_until(
        &c,
        Duration::from_secs(5),
        "the download link",
        "return !!document.querySelector('a.download')",
    )
    .await?;
    // The bytes themselves, as many as the merger wrote (the length the completed event says).
    let out = get(&d, &format!("/jobs/{job}/output"), &[]).await?;
    ensure!(
        out.status == 200 && out.body_len as u64 == done.bytes,
        "the download answered {} with {} bytes of {}: {}",
        out.status,
        out.body_len,
        done.bytes,
        out.headers
    );
    let cross = get(
        &d,
        &format!("/jobs/{job}/output"),
        &["Sec-Fetch-Site: cross-site"],
    )
    .await?;
    ensure!(
        cross.status == 403,
        "a download for another site answered {}",
        cross.status
    );
    println!(
        "browser: uploaded {job} completed, {} bytes offered",
        done.bytes
    );
    c.close().await?;
    drop(driver);
    fleet.passed();
    Ok(())
}

/// One HTTPS request to `addr`, trusting `ca` (PEM) only (`body`: a form, POSTed).
async fn https(addr: &str, path: &str, body: &str, ca: &str) -> Result<Reply> {
    use tokio_rustls::rustls::{self, pki_types};
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <pki_types::CertificateDer as pki_types::pem::PemObject>::pem_slice_iter(ca.as_bytes())
    {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::try_from("localhost")?;
    let mut s = connector.connect(name, tcp).await?;
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req += "Content-Type: application/x-www-form-urlencoded\r\n";
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // A server may close without TLS's close_notify once it has answered.
    let _ = s.read_to_end(&mut raw).await;
    reply(&raw)
}

/// Given a certificate, the dashboard serves HTTPS only (a plain request gets no page), and
/// its session cookie is `Secure`; a key that does not fit the certificate stops it at start.
#[tokio::test]
async fn with_a_certificate_it_serves_https_only() -> Result<()> {
    let fleet = ProcFleet::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    let token = dir.path().join("dashboard.token");
    std::fs::write(&token, "t0ken-over-tls\n")?;

    // A key of another certificate: refused at start, saying why.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let wrong_key = dir.path().join("other-key.pem");
    std::fs::write(&wrong_key, other.signing_key.serialize_pem())?;
    let port = free_port()?;
    let out = fleet
        .command()
        .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&wrong_key)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("certificate"),
        "a mismatched key: {err}"
    );

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = fleet
        .command()
        .args(["dashboard", "--listen", &format!("0.0.0.0:{port}")])
        .arg("--token-file")
        .arg(&token)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let d = Dashboard {
        child,
        addr: addr.clone(),
    };
    let ca = ck.cert.pem();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        match https(&addr, "/healthz", "", &ca).await {
            Ok(r) => break r,
            Err(e) => {
                ensure!(Instant::now() < deadline, "no HTTPS answer: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ensure!(health.status == 200 && health.body.contains("ok"));
    let page = https(&addr, "/", "", &ca).await?;
    ensure!(
        page.status == 303,
        "GET / without the token: {}",
        page.status
    );
    // Plain HTTP on the same port gets no page.
    ensure!(
        get(&d, "/healthz", &[]).await.map(|r| r.status).ok() != Some(200),
        "a plain HTTP request was answered"
    );
    // The sign-in over HTTPS sets a Secure cookie.
    let login = https(&addr, "/login", "token=t0ken-over-tls", &ca).await?;
    ensure!(
        login.status == 303 && login.headers.contains("Secure"),
        "{}",
        login.headers
    );
    Ok(())
}

/// One part of a multipart form: its name, its file name (a file's), its content.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A multipart form of `parts`, in order: the body and its type.
fn multipart(parts: &[Part]) -> (Vec<u8>, String) {
    let boundary = "----ffleet-test-boundary";
    let mut body = Vec::new();
    for (name, file, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// POSTs a multipart form to the dashboard: the status and body.
async fn post_form(d: &Dashboard, path: &str, parts: &[Part<'_>]) -> Result<(u16, String)> {
    let (body, ty) = multipart(parts);
    let mut s = TcpStream::connect(&d.addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {ty}\r\n\
         Content-Length: {}\r\n\r\n",
        d.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    // A server that refuses early may close before the whole body is sent.
    let _ = s.write_all(&body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, text))
}

/// What a page's upload form may send, held as an attacker would send it: without the page's
/// token, with the file before it, over the size limit, empty, or naming no profile of the
/// fleet. Each is refused with its reason, no job is submitted, and nothing is left in the
/// dashboard's work directory; a good one is taken.
#[tokio::test]
async fn uploads_from_the_page_are_checked_before_anything_is_kept() -> Result<()> {
    let fleet = ProcFleet::start(&[
        ("FFLEET_STORAGE__BACKEND", "object-store"),
        ("FFLEET_STORAGE__MAX_UPLOAD_BYTES", "4096"),
    ])
    .await?;
    let work = tempfile::tempdir()?;
    let d = dashboard_with(
        &fleet,
        "127.0.0.1",
        &[],
        &[("FFLEET_STORAGE__WORK_DIR", work.path())],
    )
    .await?;
    let page = get(&d, "/", &[]).await?;
    ensure!(
        page.body.contains("form class=\"upload\""),
        "no upload form"
    );
    let csrf = csrf_of(&page.body)?;
    let small = vec![7u8; 1000];
    let big = vec![7u8; 5000];
    let cases: [(&str, Vec<Part>, u16, &str); 5] = [
        (
            "no token",
            vec![("file", Some("a.mp4"), &small)],
            403,
            "not from this dashboard",
        ),
        (
            "the file before the token",
            vec![
                ("file", Some("a.mp4"), &small),
                ("csrf", None, csrf.as_bytes()),
            ],
            403,
            "not from this dashboard",
        ),
        (
            "over the limit",
            vec![
                ("csrf", None, csrf.as_bytes()),
                ("file", Some("a.mp4"), &big),
            ],
            413,
            "upload limit",
        ),
        (
            "an empty file",
            vec![
                ("csrf", None, csrf.as_bytes()),
                ("file", Some("a.mp4"), b""),
            ],
            400,
            "no file",
        ),
        (
            "an unknown profile",
            vec![
                ("csrf", None, csrf.as_bytes()),
                ("profile", None, b"nope"),
                ("file", Some("a.mp4"), &small),
            ],
            400,
            "no profile",
        ),
    ];
    for (what, parts, want, says) in &cases {
        let (status, text) = post_form(&d, "/upload", parts).await?;
        ensure!(
            status == *want && text.contains(says),
            "{what}: answered {status}: {text}"
        );
    }
    let left: Vec<_> = walk(work.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != ".lock"))
        .collect();
    ensure!(left.is_empty(), "left in the work directory: {left:?}");
    let mut jobs = fleet
        .ctx()
        .js
        .get_stream(ffleet_runtime::subjects::STREAM_JOBS)
        .await?;
    ensure!(
        jobs.info().await?.state.messages == 0,
        "a refused upload submitted a job"
    );
    let (status, text) = post_form(
        &d,
        "/upload",
        &[
            ("csrf", None, csrf.as_bytes()),
            ("file", Some("../../x y.mp4"), &small),
        ],
    )
    .await?;
    ensure!(status == 303, "a good upload answered {status}: {text}");
    ensure!(jobs.info().await?.state.messages == 1, "no job submitted");
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Watches of the workers bucket that someone listens to now (the fleet's services' and, while
/// someone looks, the dashboard's): consumers with a subscriber on their inbox. The server
/// forgets a consumer left without one only after its inactivity threshold (30 s for a watch),
/// but it sees the subscriber go at once.
async fn workers_watches(fleet: &ProcFleet) -> Result<usize> {
    use futures::TryStreamExt;
    let s = fleet
        .ctx()
        .js
        .get_stream(ffleet_runtime::subjects::kv_stream(
            ffleet_runtime::subjects::BUCKET_WORKERS,
        ))
        .await?;
    let infos: Vec<_> = s.consumers().try_collect().await?;
    Ok(infos.iter().filter(|c| c.push_bound).count())
}

/// Heartbeats are followed only while someone looks: a page starts the dashboard's watch, it
/// stops once nobody has looked for the linger time (here 1 s), and the next page starts it
/// again and shows the fleet as it is.
#[tokio::test]
async fn heartbeats_are_followed_only_while_someone_looks() -> Result<()> {
    let fleet = ProcFleet::standard(1, &[]).await?;
    let d = dashboard(&fleet, "127.0.0.1", &["--linger-secs", "1"]).await?;
    let idle = workers_watches(&fleet).await?;
    let page = get(&d, "/", &[]).await?;
    ensure!(
        page.body.contains("data-node=\"enc-1\""),
        "no node on the page"
    );
    ensure!(
        workers_watches(&fleet).await? == idle + 1,
        "a page did not start a heartbeat watch"
    );
    // Nobody looks: the watch goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while workers_watches(&fleet).await? > idle {
        ensure!(
            Instant::now() < deadline,
            "the heartbeat watch outlived the linger time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let again = get(&d, "/", &[]).await?;
    ensure!(
        again
            .body
            .contains("data-node=\"enc-1\" data-state=\"ready\""),
        "the page after the quiet lost the node"
    );
    // A live stream keeps it however long it stays open.
    let mut live = Live::open(&d).await?;
    live.until("fleet", Duration::from_secs(5), |h| h.contains("enc-1"))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        workers_watches(&fleet).await? == idle + 1,
        "the watch stopped under an open stream"
    );
    live.until("fleet", Duration::from_secs(5), |h| {
        h.contains("data-state=\"ready\"")
    })
    .await?;
    Ok(())
}
