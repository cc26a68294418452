//! The sandbox in a real browser: headless Chromium driven over WebDriver (chromedriver), clicking
//! through what a person does: create a payment link, pay on the simulated checkout, come back to
//! the store, see the license, move it to the next paid period, cancel it.
//!
//! Needs Debian's `chromium` and `chromium-driver` on PATH. Without them the test says on stderr
//! that it was skipped and why, and passes, except when `CI` is set: there it fails, so that CI
//! never passes without having run it.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use stripe_licensespring::demo::{Demo, DemoOptions, start_demo};

/// How long any one step may take before the test gives up.
const STEP: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_person_buys_renews_is_declined_pauses_resumes_and_cancels_in_the_sandbox() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let demo = start_demo(&DemoOptions {
        host: "127.0.0.1".to_owned(),
        port: 0,
        cache_path: None,
        log_filter: "info".to_owned(),
        log_format: Default::default(),
    })
    .await
    .expect("the sandbox starts");
    let driver = ChromeDriver::start(&chromedriver).await;
    let browser = driver.session(&chromium).await;

    let result = click_through(&browser, &demo).await;
    let _ = browser.close().await;
    drop(driver);
    demo.shutdown().await.expect("the sandbox stops");
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The flow itself; an `Err` names the step that failed.
async fn click_through(browser: &Client, demo: &Demo) -> Result<(), String> {
    browser.goto(demo.url().as_str()).await.map_err(|e| format!("open the store: {e}"))?;
    let banner = text_of(browser, ".banner").await?;
    check(banner.contains("Sandbox") && banner.contains("nothing is charged"), "the banner", &banner)?;
    let buttons = browser.find_all(Locator::Css("button.subscribe")).await.map_err(|e| e.to_string())?;
    check(buttons.len() == 2, "a subscribe button per price", &buttons.len().to_string())?;
    look_at(browser, "store").await?;

    click(browser, "form[action='/create-payment-link'] button.subscribe").await?;
    wait_until(browser, "the checkout page", async || {
        let url = browser.current_url().await.ok()?;
        url.path().starts_with("/checkout/plink_").then_some(())
    })
    .await?;
    let name =
        browser.find(Locator::Css("input[name='name']")).await.map_err(|e| format!("the name field: {e}"))?;
    name.send_keys("Jane Doe").await.map_err(|e| format!("type a name: {e}"))?;
    click(browser, "form.pay button[type='submit']").await?;

    // The checkout sends the buyer to the thank-you page, which shows the key at once (making
    // the license itself when the webhook has not been handled yet).
    let thank_you = wait_until(browser, "the thank-you page", async || {
        let url = browser.current_url().await.ok()?;
        (url.path() == "/thank-you").then_some(url)
    })
    .await?;
    let key = text_of(browser, "code.license-key").await?;
    check(key.len() == 19 && key.chars().filter(|c| *c == '-').count() == 3, "the key's shape", &key)?;
    let subscription = demo.panel().stripe().subscriptions().pop().ok_or("no subscription was created")?.id;
    let in_stripe = demo
        .panel()
        .stripe()
        .subscription(&subscription)
        .and_then(|s| s.metadata.get("license_key").cloned());
    check(in_stripe.as_deref() == Some(key.as_str()), "the key Stripe holds", &key)?;
    look_at(browser, "thank-you").await?;

    browser.goto(demo.url().as_str()).await.map_err(|e| format!("back to the store: {e}"))?;
    let row = format!("tr[id='{subscription}']");
    wait_until(browser, "the new license", async || {
        (text_of(browser, &format!("{row} .enabled")).await.ok()? == "yes").then_some(())
    })
    .await?;
    let shown = text_of(browser, &format!("{row} code.license-key")).await?;
    check(shown == key, "the store's table shows the same key", &shown)?;
    let first_end = period_end(demo, &subscription)?;
    let valid_until = text_of(browser, &format!("{row} .valid-until")).await?;
    check(valid_until == first_end, "valid until the first period's end", &valid_until)?;
    let enabled = text_of(browser, &format!("{row} .enabled")).await?;
    check(enabled == "yes", "enabled", &enabled)?;

    click(browser, &format!("{row} button.renew")).await?;
    let moved = wait_until(browser, "valid until to move", async || {
        let shown = text_of(browser, &format!("{row} .valid-until")).await.ok()?;
        (shown != first_end).then_some(shown)
    })
    .await?;
    let second_end = period_end(demo, &subscription)?;
    check(moved == second_end && second_end > first_end, "valid until the next period's end", &moved)?;

    // A declined renewal: past_due, and the license stays enabled while Stripe retries.
    click(browser, &format!("{row} button.decline")).await?;
    wait_until(browser, "past_due", async || {
        (text_of(browser, &format!("{row} .status")).await.ok()? == "past_due").then_some(())
    })
    .await?;
    let enabled = text_of(browser, &format!("{row} .enabled")).await?;
    check(enabled == "yes", "still enabled while past_due", &enabled)?;
    click(browser, &format!("{row} button.retry-paid")).await?;
    wait_until(browser, "active again", async || {
        (text_of(browser, &format!("{row} .status")).await.ok()? == "active").then_some(())
    })
    .await?;

    // Paused: disabled; resumed: enabled again.
    click(browser, &format!("{row} button.pause")).await?;
    wait_until(browser, "the paused license to be disabled", async || {
        let enabled = text_of(browser, &format!("{row} .enabled")).await.ok()?;
        let status = text_of(browser, &format!("{row} .status")).await.ok()?;
        (status == "paused" && enabled == "no").then_some(())
    })
    .await?;
    click(browser, &format!("{row} button.resume")).await?;
    wait_until(browser, "the resumed license to be enabled", async || {
        let enabled = text_of(browser, &format!("{row} .enabled")).await.ok()?;
        let status = text_of(browser, &format!("{row} .status")).await.ok()?;
        (status == "active" && enabled == "yes").then_some(())
    })
    .await?;
    let resumed_until = text_of(browser, &format!("{row} .valid-until")).await?;
    let resumed_end = period_end(demo, &subscription)?;
    check(resumed_until == resumed_end, "valid until the resumed period's end", &resumed_until)?;

    // The customer cancels in Stripe's customer portal, opened from the thank-you page.
    browser.goto(thank_you.as_str()).await.map_err(|e| format!("the thank-you page again: {e}"))?;
    click(browser, "button.manage-billing").await?;
    wait_until(browser, "the customer portal", async || {
        let url = browser.current_url().await.ok()?;
        url.path().starts_with("/portal/").then_some(())
    })
    .await?;
    look_at(browser, "portal").await?;
    click(browser, &format!("section[id='{subscription}'] form.cancel-now button")).await?;
    let result =
        wait_until(browser, "the portal's answer", async || text_of(browser, "p.result").await.ok()).await?;
    check(result.to_lowercase().contains("cancel"), "the portal says it is canceled", &result)?;
    click(browser, "a.return").await?;
    wait_until(browser, "the license to be disabled on the store page", async || {
        let url = browser.current_url().await.ok()?;
        let enabled = text_of(browser, &format!("{row} .enabled")).await.ok()?;
        (url.path() == "/" && enabled == "no").then_some(())
    })
    .await?;
    let status = text_of(browser, &format!("{row} .status")).await?;
    check(status == "canceled", "the subscription's status", &status)?;

    // The operator's view: the admin page, through the sandbox notice's link (the link the
    // sandbox prints is the same). The deleted subscription has left the store; its deliveries
    // are listed, all handled.
    let link =
        browser.find(Locator::Css("a.admin-link")).await.map_err(|e| format!("the admin link: {e}"))?;
    let href = link.attr("href").await.map_err(|e| e.to_string())?.unwrap_or_default();
    check(href == demo.admin_url().as_str(), "the admin link is the one printed", &href)?;
    link.click().await.map_err(|e| format!("click the admin link: {e}"))?;
    let heading = text_of(browser, "h1").await?;
    check(heading == "Admin", "the admin page", &heading)?;
    let subscriptions_of_deliveries = browser
        .find_all(Locator::Css("tr[data-event] td:nth-child(3)"))
        .await
        .map_err(|e| format!("find the deliveries: {e}"))?;
    let mut ours = 0;
    for cell in subscriptions_of_deliveries {
        if cell.text().await.map_err(|e| e.to_string())?.trim() == subscription {
            ours += 1;
        }
    }
    check(ours >= 4, "the subscription's deliveries on the admin page", &ours.to_string())?;
    let outcomes = browser.find_all(Locator::Css("td.outcome")).await.map_err(|e| e.to_string())?;
    for outcome in outcomes {
        let text = outcome.text().await.map_err(|e| e.to_string())?;
        check(text.trim() != "failed", "no failed delivery", &text)?;
    }
    look_at(browser, "admin").await
}

/// Saves a screenshot of the page (wide, then 360 px wide: a phone) under the target directory,
/// for a person to look at, and checks that the phone-wide page needs no sideways scrolling.
async fn look_at(browser: &Client, name: &str) -> Result<(), String> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (width, suffix) in [(1280, ""), (360, "-phone")] {
        browser.set_window_size(width, 900).await.map_err(|e| format!("resize to {width}: {e}"))?;
        let png = browser.screenshot().await.map_err(|e| format!("screenshot {name}: {e}"))?;
        std::fs::write(dir.join(format!("{name}{suffix}.png")), png).map_err(|e| e.to_string())?;
    }
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .map_err(|e| format!("measure {name}: {e}"))?;
    browser.set_window_size(1280, 900).await.map_err(|e| format!("resize back: {e}"))?;
    check(
        overflow.as_i64() == Some(0),
        &format!("{name} at 360 px: no sideways scrolling (px too wide)"),
        &overflow.to_string(),
    )
}

fn check(ok: bool, what: &str, shown: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("{what}: the page shows {shown:?}")) }
}

async fn text_of(browser: &Client, css: &str) -> Result<String, String> {
    let element = browser.find(Locator::Css(css)).await.map_err(|e| format!("find {css}: {e}"))?;
    element.text().await.map(|text| text.trim().to_owned()).map_err(|e| format!("read {css}: {e}"))
}

async fn click(browser: &Client, css: &str) -> Result<(), String> {
    let element = wait_until(browser, css, async || browser.find(Locator::Css(css)).await.ok()).await?;
    element.click().await.map_err(|e| format!("click {css}: {e}"))
}

/// Polls `probe` until it gives a value. Errors count as "not yet": the page may be reloading
/// (after a click, or by its own meta refresh) while it is read.
async fn wait_until<T>(
    browser: &Client,
    what: &str,
    probe: impl AsyncFn() -> Option<T>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if started.elapsed() > STEP {
            let page = browser.source().await.unwrap_or_default();
            return Err(format!("gave up waiting for {what}; the page is:\n{page}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The subscription's current period end in the Stripe simulator, as the page writes dates.
fn period_end(demo: &Demo, subscription: &str) -> Result<String, String> {
    let subscription = demo.panel().stripe().subscription(subscription).ok_or("the subscription vanished")?;
    let end =
        chrono::DateTime::from_timestamp(subscription.current_period_end, 0).ok_or("a bad period end")?;
    Ok(end.date_naive().to_string())
}

/// The browser and its driver from PATH, or `None` (after saying why) when the test is skipped.
/// Panics instead when `CI` is set.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_on_path("chromium");
    let chromedriver = find_on_path("chromedriver");
    let missing: Vec<&str> = [("chromium", &chromium), ("chromedriver", &chromedriver)]
        .into_iter()
        .filter(|(_, found)| found.is_none())
        .map(|(name, _)| name)
        .collect();
    if missing.is_empty() {
        return chromium.zip(chromedriver);
    }
    let why =
        format!("{} not found on PATH; install Debian's chromium and chromium-driver", missing.join(" and "));
    let in_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0");
    assert!(!in_ci, "the browser test cannot run in CI: {why}");
    // Straight to stderr, past the test harness's capture, so the skip is seen in every run.
    let _ = writeln!(std::io::stderr(), "browser test skipped: {why}");
    None
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        candidate.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// A chromedriver in a process group of its own, with its own home and temporary directories so
/// that Chrome writes nothing elsewhere. Dropping it kills the whole group: a failed test leaves
/// no Chrome behind.
struct ChromeDriver {
    child: Child,
    port: u16,
    home: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start(path: &Path) -> ChromeDriver {
        let home = tempfile::tempdir().expect("a temporary home for Chrome");
        for dir in ["tmp", "config", "cache", "profile"] {
            std::fs::create_dir(home.path().join(dir)).expect("a directory in the temporary home");
        }
        // A free port for chromedriver: ask the OS for one, then hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .env("TMPDIR", home.path().join("tmp"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver { child, port, home };
        driver.wait_ready().await;
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let status = http.get(format!("{}/status", self.url())).send().await;
            if let Ok(response) = status {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return;
                }
            }
            assert!(started.elapsed() < STEP, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A headless Chromium session with a fresh profile.
    async fn session(&self, chromium: &Path) -> Client {
        let profile = self.home.path().join("profile");
        let options = json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.display()),
            ],
            // Without these, a session now and then stalls for seconds on Chrome's new-tab page.
            "prefs": {"session.restore_on_startup": 4, "session.startup_urls": ["about:blank"]},
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::rustls()
            .expect("the WebDriver client's TLS setup")
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .expect("a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // `-- -PGID`: the whole group, chromedriver and every Chrome it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
