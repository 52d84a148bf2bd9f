//! A W3C WebDriver session, as much of it as `bench browser` drives: open a session, load a
//! page, find an element by id, click it, close. Requests are JSON over HTTP to chromedriver
//! (reqwest, which the CLI has anyway); a WebDriver error comes back as its `error` and
//! `message`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The key under which WebDriver names an element in its answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An open browser session.
pub struct Session {
    http: reqwest::Client,
    base: String,
}

/// An element of the page a session shows.
pub struct Element<'a> {
    session: &'a Session,
    id: String,
}

impl Session {
    /// Opens a session on the WebDriver server at `server` with these capabilities.
    pub async fn open(server: &str, capabilities: Value) -> Result<Session> {
        let http = reqwest::Client::new();
        let value = call(http.post(format!("{server}/session")).json(&json!({
            "capabilities": { "alwaysMatch": capabilities },
        })))
        .await?;
        let id = value["sessionId"]
            .as_str()
            .context("the WebDriver server answered a new session without a sessionId")?;
        Ok(Session {
            base: format!("{server}/session/{id}"),
            http,
        })
    }

    /// Loads `url` and waits for it (WebDriver's page load strategy).
    pub async fn goto(&self, url: &str) -> Result<()> {
        call(
            self.http
                .post(format!("{}/url", self.base))
                .json(&json!({ "url": url })),
        )
        .await?;
        Ok(())
    }

    /// The element with this `id` attribute.
    pub async fn find_id(&self, id: &str) -> Result<Element<'_>> {
        let value = call(
            self.http
                .post(format!("{}/element", self.base))
                .json(&json!({
                    "using": "css selector",
                    "value": format!("[id=\"{id}\"]"),
                })),
        )
        .await
        .with_context(|| format!("finding the element #{id}"))?;
        let element = value[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("the WebDriver server answered no element for #{id}"))?;
        Ok(Element {
            session: self,
            id: element.to_owned(),
        })
    }

    /// Ends the session (the browser closes).
    pub async fn close(self) -> Result<()> {
        call(self.http.delete(&self.base)).await?;
        Ok(())
    }
}

impl Element<'_> {
    pub async fn click(&self) -> Result<()> {
        let s = self.session;
        call(
            s.http
                .post(format!("{}/element/{}/click", s.base, self.id))
                .json(&json!({})),
        )
        .await?;
        Ok(())
    }
}

/// Sends a WebDriver command; its `value`, or the WebDriver error as an error.
async fn call(request: reqwest::RequestBuilder) -> Result<Value> {
    let response = request
        .send()
        .await
        .context("reaching the WebDriver server")?;
    let status = response.status();
    let mut body: Value = response
        .json()
        .await
        .with_context(|| format!("reading a WebDriver answer ({status})"))?;
    let value = body["value"].take();
    if !status.is_success() {
        bail!(
            "WebDriver: {}: {}",
            value["error"].as_str().unwrap_or("error"),
            value["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    /// The calls `bench browser` makes, against a real headless Chromium.
    #[tokio::test]
    async fn drives_a_real_chromium() {
        if std::env::var_os("RUNEGRID_SKIP_BROWSER").is_some() {
            return;
        }
        let (_driver, b) = crate::bench_browser::start_browser("chromedriver")
            .await
            .expect(
                "chromedriver is not installed (apt-get install chromium chromium-driver), \
                 or set RUNEGRID_SKIP_BROWSER=1",
            );
        b.goto("data:text/html,<button id=toggle onclick=\"this.id='clicked'\">go</button>")
            .await
            .unwrap();
        b.find_id("toggle").await.unwrap().click().await.unwrap();
        // The click ran the page's handler: the button is #clicked now.
        b.find_id("clicked").await.unwrap();
        let gone = b.find_id("toggle").await.err().expect("#toggle is gone");
        assert!(format!("{gone:#}").contains("no such element"), "{gone:#}");
        b.close().await.unwrap();
    }
}
