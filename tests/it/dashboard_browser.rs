//! The dashboard driven in headless Chromium (Debian's `chromium` and `chromium-driver`) over
//! WebDriver: a topic is created from its form, a message sent from the producer page, found
//! by key and opened, a consumer group's lag seen at 1 and then falling to 0 on the live page
//! (no reload), and the topic deleted after the confirmation dialog. Every page is saved as a
//! screenshot under `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`.
//!
//! chromedriver is started on a free port in its own process group (so the browsers it starts
//! belong to it) and that group is killed when the test ends, however it ends.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::dashboard::{commit, consumer, TestDashboard};
use crate::harness::TestBroker;
use crate::rust_client_support::wait_registered;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver child in its own process group; the group is killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the dashboard's browser test drives Debian's chromium \
                 through chromedriver. Install them with `apt-get install -y chromium \
                 chromium-driver` (.ci/run does so when they are missing)."
            );
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
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

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

const TOPIC: &str = "BrowserTopic";
const GROUP: &str = "browser_group";

#[test]
fn a_browser_creates_a_topic_sends_finds_and_sees_the_lag_fall_to_zero() {
    let driver = ChromeDriver::start();
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let dashboard = TestDashboard::start(&broker.namesrv.addr);
    let base = dashboard.base.clone();
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
                "--window-size=1280,900"],
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
        let deadline = Instant::now() + WAIT;
        while !c.current_url().await.unwrap().path().ends_with("/topics") {
            assert!(
                Instant::now() < deadline,
                "no redirect to /topics after the delete"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        c.close().await.unwrap();
    });
    drop(online);
    drop(driver);
}
