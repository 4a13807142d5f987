//! The web console in a real browser: Debian's headless Chromium driven through
//! chromedriver's W3C WebDriver API. The test checks the assets' headers, logs in with a
//! key (a wrong one first), opens a session and checks its phase timeline, exec, files,
//! version and evidence proofs, redrives a dead letter from the queue page, and opens
//! the run, metrics, egress and credentials pages (a secret's value never reaches the
//! page); it saves full-page screenshots in `CORDON_SCREENSHOT_DIR` when that is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::workflow_scenarios::{
    Recorder, call, define, policy_allowing, server_args, start, start_run, wait_status,
};
use super::{Backend, Place, block_on, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the test waits for anything to appear on the page.
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process with one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the console test needs Debian's Chromium and its driver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = block_on(async {
                let r = http.get(format!("{base}/status")).send().await.ok()?;
                r.json::<Value>().await.ok()
            });
            if ready.is_some_and(|s| s["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let created: Value = block_on(async {
            http.post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let value: Value = block_on(async { request.send().await.unwrap().json().await.unwrap() });
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})));
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let found = self.command(
            Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().map(str::to_owned)
    }

    fn page(&self) -> String {
        self.command(Method::GET, "/source", None)
            .as_str()
            .unwrap_or("")
            .chars()
            .take(4000)
            .collect()
    }

    /// Waits for an element matching `css`.
    #[track_caller]
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.try_find(css) {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` on the page after {WAIT:?}:\n{}",
                self.page()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn text(&self, element: &str) -> String {
        self.command(Method::GET, &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until the element matching `css` shows `wanted`; its text.
    #[track_caller]
    fn wait_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.try_find(css) {
                let text = self.text(&element);
                if text.contains(wanted) {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never showed `{wanted}`:\n{}",
                self.page()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command(
            Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.command(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        );
    }

    fn script(&self, script: &str) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn set_height(&self, height: u64) {
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({"width": 1400, "height": height})),
        );
    }

    /// A PNG of the whole page: the window grows to the page's height plus the
    /// window's own frame (at most 5000 pixels) for the shot, then shrinks back.
    fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        use base64::Engine;
        let height = self
            .script(
                "return document.documentElement.scrollHeight \
                 + window.outerHeight - window.innerHeight",
            )
            .as_u64()
            .unwrap_or(1000)
            .clamp(1000, 5000);
        self.set_height(height);
        let png = self.command(Method::GET, "/screenshot", None);
        self.set_height(1000);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = block_on(async { self.http.delete(url).send().await });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn log_in_open_a_session_and_redrive_a_dead_letter_in_a_browser() {
    let up = Recorder::start(Duration::ZERO);
    let files = tempfile::tempdir().unwrap();
    let args = server_args(&files, &up);
    let s = start(Place::with_sandboxes(Backend::Sqlite), &args);
    let token = s.server.token.clone();

    // Something to look at: a session with a command and a file, and a run whose step
    // the policy blocked, waiting in the dead-letter queue.
    // The assets need no key and carry a strict policy; an unknown one is the API's 404.
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let response = block_on(http.get(s.url(path)).send()).unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    let response = block_on(http.get(s.url("/ui/secrets.txt")).send()).unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = block_on(response.json()).unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body}");

    let session = s.active_session("default");
    s.ok(&session, "echo hello > /workspace/hello.txt && echo done");
    // A version, then active again: the timeline has four events.
    let (status, body) = call(
        &s,
        &token,
        Method::POST,
        &format!("/v1/sessions/{session}/checkpoint"),
        &[],
        Some(json!({"summary": "after hello", "reason": "console test"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &s,
        &token,
        Method::POST,
        &format!("/v1/sessions/{session}/resume"),
        &[],
        Some(json!({})),
    );
    assert_eq!(status, 200, "{body}");
    // A credential lent to the session: its metadata shows, its value never does.
    const SECRET_VALUE: &str = "console-test-secret-value-9f3a";
    let (status, body) = call(
        &s,
        &token,
        Method::POST,
        "/v1/secrets",
        &[],
        Some(
            json!({"name": "recorder-token", "service_class": "recorder",
            "header": "Authorization", "format": "Bearer {secret}", "value": SECRET_VALUE}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &s,
        &token,
        Method::POST,
        &format!("/v1/sessions/{session}/leases"),
        &[],
        Some(json!({"secret": "recorder-token"})),
    );
    assert_eq!(status, 201, "{body}");
    let blocked = format!("http://blocked.test:{}/b", up.port());
    let digest = define(
        &s,
        &format!(
            "name: reaching\nsteps:\n  - {{name: out, kind: http, method: POST, url: \"{blocked}\"}}\n"
        ),
    );
    let run = start_run(&s, json!({"definition": digest}));
    assert_eq!(
        wait_status(&s, &run, &["blocked", "failed"])["status"],
        "blocked"
    );
    let (status, list) = call(
        &s,
        &token,
        Method::GET,
        &format!("/v1/dlq?run_id={run}"),
        &[],
        None,
    );
    assert_eq!(status, 200, "{list}");
    let entry = list["items"][0]["id"].as_str().unwrap().to_owned();
    // The policy is fixed, so the redrive will succeed.
    let (status, body) = call(
        &s,
        &token,
        Method::PUT,
        "/v1/egress/policy",
        &[],
        Some(policy_allowing(&up, &["up.test", "blocked.test"])),
    );
    assert!(status == 200 || status == 201, "{body}");
    std::thread::sleep(Duration::from_millis(1500));

    let shots = std::env::var_os("CORDON_SCREENSHOT_DIR").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let shots = shots.unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&shots).unwrap();

    let browser = Browser::start();
    let ui = format!("{}/ui", s.server.url);
    browser.open(&ui);
    // A wrong key is refused with its reason code.
    browser.type_into("[data-testid=login-token]", "cdn_not_a_real_token");
    browser.click("[data-testid=login-submit]");
    let refused = browser.wait_text("[data-testid=login-error]", "AUTHN_");
    assert!(refused.contains("AUTHN_INVALID_CREDENTIALS"), "{refused}");
    browser.screenshot(&shots, "console-login-refused");

    browser.type_into("[data-testid=login-token]", &token);
    browser.click("[data-testid=login-submit]");
    browser.wait_text("[data-testid=sessions-table]", &session);
    browser.screenshot(&shots, "console-sessions");
    browser.click(&format!("[data-testid=session-link-{session}]"));
    browser.find("[data-testid=event-created]");
    browser.find("[data-testid=event-active]");
    browser.find("[data-testid=event-checkpointed]");
    browser.wait_text("[data-testid=session-phase]", "active");
    browser.wait_text("[data-testid=exec-history]", "0");
    browser.wait_text("[data-testid=files]", "hello.txt");
    browser.wait_text("[data-testid=versions]", "after hello");
    browser.wait_text("[data-testid=leases]", "recorder-token");
    // The nav names the key by its ends, never in full.
    let caller = browser.wait_text("[data-testid=caller]", &token[token.len() - 4..]);
    assert!(!caller.contains(&token), "{caller}");
    // Every entry's inclusion proof is checked in the page against the checkpoint.
    browser.wait_text("[data-testid=evidence]", "verified");
    let evidence = browser.text(&browser.find("[data-testid=evidence]"));
    assert!(!evidence.contains("mismatch"), "{evidence}");
    browser.screenshot(&shots, "console-session");

    // Redrive the dead letter from the queue page.
    browser.click("[data-testid=nav-dlq]");
    browser.click(&format!("[data-testid=redrive-{entry}]"));
    let outcome = browser.wait_text("[data-testid=dlq-result]", "redriven");
    assert!(outcome.contains(&run), "{outcome}");
    browser.wait_text(&format!("[data-testid=dlq-status-{entry}]"), "redriven");
    browser.screenshot(&shots, "console-dlq");
    let (status, body) = call(
        &s,
        &token,
        Method::GET,
        &format!("/v1/dlq/{entry}"),
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "redriven", "{body}");
    assert_eq!(
        wait_status(&s, &run, &["succeeded", "failed"])["status"],
        "succeeded"
    );

    // The run's journal, and the metrics.
    browser.click("[data-testid=nav-runs]");
    browser.click(&format!("[data-testid=run-link-{run}]"));
    browser.wait_text("[data-testid=run-status]", "succeeded");
    browser.wait_text("[data-testid=journal]", "completed");
    browser.screenshot(&shots, "console-run");
    browser.click("[data-testid=nav-metrics]");
    browser.find("[data-testid=stat-success]");
    browser.wait_text("[data-testid=metrics-body]", "Top egress denial causes");
    browser.screenshot(&shots, "console-metrics");
    browser.click("[data-testid=nav-egress]");
    browser.wait_text(
        "[data-testid=egress-table]",
        "EGRESS_DESTINATION_NOT_ALLOWED",
    );
    browser.screenshot(&shots, "console-egress");
    browser.click("[data-testid=nav-credentials]");
    browser.wait_text("[data-testid=secrets-table]", "recorder-token");
    browser.wait_text("[data-testid=leases-table]", "live");
    browser.screenshot(&shots, "console-credentials");
    let page = browser.command(Method::GET, "/source", None);
    let page = page.as_str().unwrap();
    assert!(
        page.contains("Bearer {secret}"),
        "the secret's format is shown"
    );
    assert!(
        !page.contains(SECRET_VALUE),
        "a secret's value reached the page"
    );
    assert!(!page.contains(&token), "the token is on the page");

    // This week's report, as the HTML a reader gets, rendered by the same browser.
    let week = cordon_telemetry::IsoWeek::containing(cordon_core::Timestamp::now()).to_string();
    let (status, html) = s.request(
        Method::GET,
        &format!("/v1/reports/weekly?week={week}&format=html"),
        &[],
        None,
        None,
    );
    assert_eq!(status, 200);
    let report = shots.join("weekly-report.html");
    std::fs::write(&report, &html).unwrap();
    browser.open(&format!("file://{}", report.display()));
    browser.wait_text("h1", &week);
    browser.screenshot(&shots, "weekly-report");

    // Logging out forgets the key.
    browser.open(&ui);
    browser.click("[data-testid=logout]");
    browser.find("[data-testid=login-token]");
    browser.open(&format!("{ui}#/sessions"));
    browser.find("[data-testid=login-token]");
}
