//! The dashboard driven in headless Chromium (Debian's `chromium` and `chromium-driver`) over
//! WebDriver, signed in as an admin of a users file: a page of another local origin tries a
//! cross-origin `fetch` POST (a "simple" one and a JSON one), a cross-origin read and a form
//! POST (JSON smuggled in a text/plain form) against the signed-in dashboard, and frames it;
//! a DNS-rebinding name is refused; none of it reaches the broker. Then the dashboard's own
//! pages work: a topic is created from its form, a message sent from the producer page,
//! found by key and opened, a consumer group's lag seen at 1 and then falling to 0 on the live
//! page (no reload), and the topic deleted after the confirmation dialog. Every page is saved
//! as a screenshot under `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`.
//!
//! chromedriver is started on a free port in its own process group (so the browsers it starts
//! belong to it) and that group is killed when the test ends, however it ends. Without chromium
//! or chromedriver the test says it was skipped and why, on the terminal; under CI (`CI=true`)
//! it fails instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::dashboard::{broker_has_topic, commit, consumer, TestDashboard};
use crate::harness::TestBroker;
use crate::rust_client_support::wait_registered;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver child in its own process group; the group is killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
    /// chromedriver's and Chromium's TMPDIR (the browser profile, chromedriver's scoped
    /// dirs): removed after the process group is killed, which leaves them no chance to.
    _tmp: tempfile::TempDir,
}

/// Whether the browser is here. Without it the test is skipped, saying why on the terminal,
/// except under CI (`CI=true`), where a missing browser fails the test.
fn browser_or_skip(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|b| !Path::new(b).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing: the dashboard's browser test drives Debian's chromium through \
         chromedriver; install them with `apt-get install -y chromium chromium-driver` \
         (.ci/run does so when they are missing)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI (CI=true) this test must run");
    }
    // Written to the terminal itself: the harness keeps a passing test's print macros.
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED, {why}");
    false
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let tmp = tempfile::Builder::new()
            .prefix("ringmq-it-chromium-")
            .tempdir_in("/tmp")
            .unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of the process group this test created (its leader is our own,
        // unreaped child, so the group id cannot have been reused).
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the element of `css` exists and its text satisfies `ok`; its text.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(text) = e.text().await {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(Instant::now() < deadline, "{css}: still {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces the value of the input `css`.
async fn fill(c: &Client, css: &str, value: &str) {
    let input = c.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(value).await.unwrap();
}

/// Waits until the browser is at `path`.
async fn wait_path(c: &Client, path: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = c.current_url().await.unwrap();
        if now.path() == path {
            return;
        }
        assert!(Instant::now() < deadline, "still at {now}, not {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A site of another origin (another loopback port) that serves one page to every request,
/// until dropped.
struct OtherSite {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherSite {
    fn serve(page: String) -> OtherSite {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        OtherSite {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a hostile page does to a dashboard at `target` while the operator is signed in.
fn hostile_page(target: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html><body>
<pre id="done"></pre>
<iframe id="frame" src="{target}/" width="600" height="200"></iframe>
<form id="form" method="POST" enctype="text/plain" action="{target}/api/topics">
<input name='{{"topic":"CsrfFormTopic","cluster":"DefaultCluster","x":"' value='"}}'>
</form>
<script>
async function attempt(name, url, init) {{
  try {{
    const res = await fetch(url, Object.assign({{credentials: "include"}}, init));
    return name + ": " + res.type + " " + res.status;
  }} catch (e) {{
    return name + ": " + e.name;
  }}
}}
(async () => {{
  const topic = JSON.stringify({{topic: "CsrfFetchTopic", cluster: "DefaultCluster"}});
  const out = [
    await attempt("simple", "{target}/api/topics", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}}, body: topic}}),
    await attempt("send", "{target}/api/messages", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({{topic: "CsrfFetchTopic", body: "from evil page"}})}}),
    await attempt("json", "{target}/api/topics", {{method: "POST",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{topic: "CsrfJsonTopic", cluster: "DefaultCluster"}})}}),
    await attempt("read", "{target}/api/session", {{}}),
  ];
  document.getElementById("done").textContent = out.join("\n");
}})();
</script></body></html>"#
    )
}

const TOPIC: &str = "BrowserTopic";
const GROUP: &str = "browser_group";
const HOSTILE_TOPICS: [&str; 3] = ["CsrfFetchTopic", "CsrfJsonTopic", "CsrfFormTopic"];

#[test]
fn a_browser_creates_a_topic_sends_finds_and_sees_the_lag_fall_to_zero() {
    if !browser_or_skip(
        "dashboard_browser::a_browser_creates_a_topic_sends_finds_and_sees_the_lag_fall_to_zero",
    ) {
        return;
    }
    let driver = ChromeDriver::start();
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.properties");
    std::fs::write(&users, "super=admin,1\nuser1=user\n").unwrap();
    let dashboard = TestDashboard::start_with(&broker.namesrv.addr, |o| {
        o.users_file = Some(users.clone());
    });
    let base = dashboard.base.clone();
    let hostile = OtherSite::serve(hostile_page(&base));
    let hostile_url = format!("http://{}/", hostile.addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        let options = json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--disable-crash-reporter", "--disable-breakpad",
                "--window-size=1280,900",
                // A name that resolves to the dashboard, as DNS rebinding makes one.
                "--host-resolver-rules=MAP rebound.example 127.0.0.1"],
        });
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a WebDriver session")
    });
    let url = |path: &str| format!("{base}{path}");

    rt.block_on(async {
        // Signing in: the page asked for goes to the sign-in page and comes back.
        c.goto(&url("/topics")).await.unwrap();
        wait_path(&c, "/login").await;
        fill(&c, "input[name=username]", "super").await;
        fill(&c, "input[name=password]", "admin").await;
        click(&c, "form.api button[type=submit]").await;
        wait_path(&c, "/topics").await;
        wait_text(&c, "#session", |t| t.contains("signed in as super (admin)")).await;
        // The stylesheet and the script came through the policy (no inline ones to refuse).
        let style = "return getComputedStyle(document.querySelector('header')).backgroundColor;";
        let background = c.execute(style, vec![]).await.unwrap();
        assert_eq!(background, "rgb(26, 54, 93)");

        // Another origin's page, while the operator is signed in: its fetches and its form
        // reach nothing; it cannot read the API or frame the dashboard.
        c.goto(&hostile_url).await.unwrap();
        let done = wait_text(&c, "#done", |t| t.lines().count() == 4).await;
        // The "simple" POSTs are sent (that is what browsers do) and refused with 403; with
        // Cross-Origin-Resource-Policy the page does not even get an opaque answer. The JSON
        // one never leaves the browser: its preflight is not granted. Nothing reads the API.
        for attempt in ["simple", "send", "json", "read"] {
            assert!(done.contains(&format!("{attempt}: TypeError")), "{done}");
        }
        shot(&c, "hostile").await;
        c.enter_frame(0).await.unwrap();
        let framed = c.find(Locator::Css("header .brand")).await;
        assert!(
            framed.is_err(),
            "the dashboard rendered inside another site's frame"
        );
        c.enter_parent_frame().await.unwrap();
        c.execute("document.getElementById('form').submit();", vec![])
            .await
            .unwrap();
        let refused = wait_text(&c, "body", |t| t.contains("403")).await;
        assert!(
            refused.contains("needs Content-Type: application/json"),
            "{refused}"
        );
        shot(&c, "hostile-form").await;

        // A DNS-rebinding name for the dashboard: refused, nothing to read.
        let port = dashboard.addr.port();
        c.goto(&format!("http://rebound.example:{port}/api/session"))
            .await
            .unwrap();
        let refused = wait_text(&c, "body", |t| t.contains("421")).await;
        assert!(refused.contains("Host rebound.example"), "{refused}");
        assert!(!refused.contains("csrfToken"), "{refused}");
    });
    for topic in HOSTILE_TOPICS {
        assert!(
            !broker_has_topic(&broker, topic),
            "{topic} reached the broker"
        );
    }

    rt.block_on(async {
        // A topic from the topics page's form (2 queues); the page reloads with it listed.
        c.goto(&url("/topics")).await.unwrap();
        fill(&c, "form.api input[name=topic]", TOPIC).await;
        fill(&c, "form.api input[name=readQueueNums]", "2").await;
        fill(&c, "form.api input[name=writeQueueNums]", "2").await;
        click(&c, "form.api button[type=submit]").await;
        let link = format!("#topics a[href='/topics/{TOPIC}']");
        wait_text(&c, &link, |t| t == TOPIC).await;
        shot(&c, "topics").await;
        c.goto(&url(&format!("/topics/{TOPIC}"))).await.unwrap();
        wait_text(&c, "#queues tbody tr:nth-child(2) td:nth-child(2)", |t| {
            t == "1"
        })
        .await;
        shot(&c, "topic").await;

        // A message from the producer page.
        c.goto(&url(&format!("/producer?topic={TOPIC}")))
            .await
            .unwrap();
        fill(&c, "input[name=keys]", "browser-key").await;
        fill(&c, "textarea[name=body]", "hello from a browser").await;
        click(&c, "button[type=submit]").await;
        let result = wait_text(&c, ".result.ok", |t| t.contains("SEND_OK")).await;
        assert!(result.contains("View message"), "{result}");
        shot(&c, "producer").await;

        // Found by key; its page shows the body.
        c.goto(&url(&format!("/messages?topic={TOPIC}")))
            .await
            .unwrap();
        fill(&c, "#by-key input[name=key]", "browser-key").await;
        click(&c, "#by-key button[type=submit]").await;
        wait_text(&c, "#results tbody tr td:nth-child(4)", |t| {
            t == "browser-key"
        })
        .await;
        shot(&c, "messages").await;
        click(&c, "#results tbody tr td a").await;
        wait_text(&c, "pre.body", |t| t == "hello from a browser").await;
        shot(&c, "message").await;
    });

    // A consumer of the group that has not consumed the message yet: lag 1.
    let mut online = consumer(&broker, GROUP, TOPIC, "browser-consumer");
    for q in 0..2 {
        commit(&mut online, GROUP, TOPIC, q, 0);
    }
    rt.block_on(async {
        c.goto(&url(&format!("/groups/{GROUP}"))).await.unwrap();
        let lag = "#summary tbody td:nth-child(7)";
        wait_text(&c, lag, |t| t == "1").await;
        shot(&c, "group-lag").await;
    });
    // It consumes the message; the open page shows the lag fall to 0 without a reload.
    commit(&mut online, GROUP, TOPIC, 0, 1);
    rt.block_on(async {
        wait_text(&c, "#summary tbody td:nth-child(7)", |t| t == "0").await;
        wait_text(&c, "#progress tbody tr td:nth-child(6)", |t| t == "0").await;
        let script = "return [performance.getEntriesByType('navigation')[0].type, \
                      document.querySelector('#summary').dataset.refreshed || ''];";
        let state = c.execute(script, vec![]).await.unwrap();
        assert_eq!(state[0], "navigate", "the page was not reloaded: {state}");
        assert_ne!(state[1], "", "the lag came from a live refresh: {state}");
        shot(&c, "group").await;
        c.goto(&url("/groups")).await.unwrap();
        wait_text(&c, "#groups tbody", |t| t.contains(GROUP)).await;
        shot(&c, "groups").await;

        // The topic is deleted after the confirmation dialog.
        c.goto(&url(&format!("/topics/{TOPIC}"))).await.unwrap();
        click(&c, "button.danger").await;
        c.accept_alert().await.expect("a confirmation dialog");
        wait_path(&c, "/topics").await;
        let topics = wait_text(&c, "#topics tbody", |_| true).await;
        assert!(!topics.contains(TOPIC), "{topics}");

        // The cluster page, with its chart drawn from a few samples.
        c.goto(&url("/")).await.unwrap();
        wait_text(&c, "#brokers tbody td:nth-child(2)", |t| t == "broker-it").await;
        let deadline = Instant::now() + WAIT;
        while c
            .find(Locator::Css("svg[data-chart] polyline"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the chart has no line");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shot(&c, "cluster").await;

        // Signing out: the pages ask for a sign-in again.
        click(&c, "#session button").await;
        wait_path(&c, "/login").await;
        c.goto(&url("/groups")).await.unwrap();
        wait_path(&c, "/login").await;
        c.close().await.unwrap();
    });
    for topic in HOSTILE_TOPICS {
        assert!(
            !broker_has_topic(&broker, topic),
            "{topic} reached the broker"
        );
    }
    drop(online);
    drop(hostile);
    drop(driver);
}
